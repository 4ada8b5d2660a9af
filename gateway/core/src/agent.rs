//! Agents: who answers a customer. [`builtin`] is the deterministic,
//! context-aware agent for dev mode and demos; [`webhook`] signs the calls
//! the gateway makes to a business's own agent. Both are pure: the pipeline
//! calls them with stored state and acts on what they return.

pub mod builtin;
pub mod webhook;
