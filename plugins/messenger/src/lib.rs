//! Meta Messenger and Instagram messaging (placeholder, being written).
