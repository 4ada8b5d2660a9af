//! The writes a unit of work buffers until its commit, shared by every
//! backend: the buffer itself, the read-your-writes overlay (a unit's reads
//! see its own writes), discarding, and the unit's durability. A backend
//! keeps only what is its own: how it reads committed values and how it
//! applies a write set atomically.

use std::collections::BTreeMap;

use super::{Expiry, Write};

/// A unit's buffered writes, by key (the last write to a key wins).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteSet {
    writes: BTreeMap<String, Write>,
    relaxed: bool,
}

impl WriteSet {
    /// Buffers a write.
    pub fn put(&mut self, key: &str, value: Vec<u8>) {
        self.writes.insert(key.to_string(), Write::Put(value));
    }

    /// Buffers a write the store may drop once `expiry` has passed.
    pub fn put_expiring(&mut self, key: &str, value: Vec<u8>, expiry: Expiry) {
        self.writes
            .insert(key.to_string(), Write::PutUntil(value, expiry));
    }

    /// Buffers a deletion.
    pub fn delete(&mut self, key: &str) {
        self.writes.insert(key.to_string(), Write::Delete);
    }

    /// Drops every buffered write: the unit will change nothing.
    pub fn add(&mut self, key: &str, delta: &BTreeMap<String, f64>) {
        if delta.is_empty() {
            return;
        }
        let entry = self
            .writes
            .entry(key.to_string())
            .or_insert_with(|| Write::Add(BTreeMap::new()));
        if let Write::Add(sum) = entry {
            for (k, v) in delta {
                *sum.entry(k.clone()).or_default() += v;
            }
        } else {
            // A key is either a counter or a value: never both in a unit.
            debug_assert!(false, "adding to `{key}`, which this unit also sets");
        }
    }

    pub fn discard(&mut self) {
        self.writes.clear();
        self.relaxed = false;
    }

    /// Marks the writes as safe to lose in a crash (see
    /// [`super::Txn::relax_durability`]).
    pub fn relax(&mut self) {
        self.relaxed = true;
    }

    /// Whether the writes may be committed without waiting for the disk.
    pub fn is_relaxed(&self) -> bool {
        self.relaxed
    }

    /// What this unit's own writes say `key` holds: `None` when it has not
    /// written `key` (read the store), `Some(None)` when it deleted it.
    pub fn overlay(&self, key: &str) -> Option<Option<&[u8]>> {
        self.writes.get(key).map(|w| match w {
            Write::Put(v) | Write::PutUntil(v, _) => Some(v.as_slice()),
            // Counters are never read by the units that add to them.
            Write::Delete | Write::Add(_) => None,
        })
    }

    /// Whether `key` has been written (or deleted) by this unit.
    pub fn contains(&self, key: &str) -> bool {
        self.writes.contains_key(key)
    }

    /// How many keys were written (or deleted).
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The writes, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Write)> {
        self.writes.iter()
    }

    /// `keys`' values as this unit sees them: its own writes over what
    /// `committed` reads for the keys it has not written.
    pub fn read_through<E>(
        &self,
        keys: &[String],
        mut committed: impl FnMut(&str) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Vec<Option<Vec<u8>>>, E> {
        keys.iter()
            .map(|k| match self.overlay(k) {
                Some(v) => Ok(v.map(<[u8]>::to_vec)),
                None => committed(k),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_the_units_own_writes_over_what_is_committed() {
        let mut w = WriteSet::default();
        w.put("a", b"new".to_vec());
        w.delete("b");
        let keys = ["a".to_string(), "b".to_string(), "c".to_string()];
        let seen = w
            .read_through(&keys, |k| {
                Ok::<_, ()>(Some(format!("old {k}").into_bytes()))
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![Some(b"new".to_vec()), None, Some(b"old c".to_vec())]
        );
    }

    #[test]
    fn discard_forgets_writes_and_durability() {
        let mut w = WriteSet::default();
        w.put_expiring("a", vec![1], Expiry::after(10, 5));
        w.relax();
        assert_eq!(w.overlay("a"), Some(Some(&[1u8][..])));
        w.discard();
        assert!(w.is_empty() && !w.is_relaxed() && w.overlay("a").is_none());
    }
}
