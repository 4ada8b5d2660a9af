//! The durable job queue, over plain keys so that every backend (redb,
//! Redis, Spin's key-value) can hold it, with every operation a bounded
//! number of keys whatever the backlog:
//!
//! - per shard, a FIFO of jobs due now: `qseq:<s>` (next slot number),
//!   `qhead:<s>` (first slot that may still be live) and one key per slot,
//!   `q:<s>:<n>` = `{id, due_ms}`. Enqueueing writes one slot and the
//!   counter; the worker looks at most [`WINDOW`] slots from the head.
//! - per shard, `qlater:<s>`: the few jobs due later (reminders, retries
//!   waiting out their backoff), as one small list.
//! - the job itself, sealed, at `job:<id>`, with the slot it sits in.
//!
//! Index entries hold ids and times only (no personal data). A claim moves
//! the job's due time to the end of its lease, in place.

use crate::db::Ctx;
use crate::db::{Db, DbError};
use crate::delivery::{Job, JobKind, JobRef, SHARDS};
use crate::store::{Backend, StoreError, Txn, get};

/// How many FIFO slots from the head the worker looks at per shard.
pub const WINDOW: u64 = 32;

fn corrupt(key: &str, reason: impl std::fmt::Display) -> DbError {
    DbError::Store(StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    })
}

fn number(key: &str, v: Option<Vec<u8>>) -> Result<u64, DbError> {
    match v {
        None => Ok(0),
        Some(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt(key, "not a number")),
    }
}

fn refs(key: &str, v: Option<Vec<u8>>) -> Result<Vec<JobRef>, DbError> {
    match v {
        None => Ok(Vec::new()),
        Some(b) => serde_json::from_slice(&b).map_err(|e| corrupt(key, e)),
    }
}

fn one_ref(key: &str, v: &[u8]) -> Result<JobRef, DbError> {
    serde_json::from_slice(v).map_err(|e| corrupt(key, e))
}

impl Ctx<'_> {
    pub(crate) fn put_ref(&self, txn: &mut dyn Txn, key: &str, r: &JobRef) {
        txn.put(key, serde_json::to_vec(r).expect("job refs serialize"));
    }

    pub(crate) fn save_later(&self, txn: &mut dyn Txn, shard: u32, list: &[JobRef]) {
        let key = self.k().queue_later(shard);
        if list.is_empty() {
            txn.delete(&key);
        } else {
            txn.put(&key, serde_json::to_vec(list).expect("job refs serialize"));
        }
    }

    pub(crate) async fn later(
        &self,
        txn: &mut dyn Txn,
        shard: u32,
    ) -> Result<Vec<JobRef>, DbError> {
        let key = self.k().queue_later(shard);
        refs(&key, get(txn, &key).await?)
    }

    /// Saves a job: one about a customer sealed under their key.
    pub(crate) fn save_job(&self, txn: &mut dyn Txn, job: &Job) -> Result<(), DbError> {
        let key = self.k().job(&job.id);
        let sealed = match &job.kind {
            JobKind::Agent { customer_id, .. } | JobKind::Reminder { customer_id, .. } => {
                self.seal_for(customer_id, &key, job)?
            }
            JobKind::Deliver { .. } => self.seal(&key, job)?,
        };
        txn.put(&key, sealed);
        Ok(())
    }

    pub(crate) async fn load_job(
        &self,
        txn: &mut dyn Txn,
        id: &str,
    ) -> Result<Option<Job>, DbError> {
        let key = self.k().job(id);
        match get(txn, &key).await? {
            Some(b) => Ok(Some(self.open(&key, &b).map_err(|e| e.for_job(id))?)),
            None => Ok(None),
        }
    }

    /// Adds a job to `shard`, due at `due_ms`: in the FIFO if due now,
    /// else in the shard's later list.
    pub(crate) async fn enqueue(
        &self,
        txn: &mut dyn Txn,
        shard: u32,
        kind: JobKind,
        due_ms: u64,
        now_ms: u64,
    ) -> Result<String, DbError> {
        let id = self.random_id("j");
        let mut job = Job {
            id: id.clone(),
            kind,
            attempts: 0,
            created_ms: now_ms,
            last_error: None,
            slot: None,
        };
        let r = JobRef {
            id: id.clone(),
            due_ms,
            slot: None,
        };
        if due_ms <= now_ms {
            let seq_key = self.k().queue_seq(shard);
            let n = number(&seq_key, get(txn, &seq_key).await?)?;
            self.put_ref(txn, &self.k().queue_slot(shard, n), &r);
            txn.put(&seq_key, (n + 1).to_string().into_bytes());
            job.slot = Some(n);
        } else {
            let mut list = self.later(txn, shard).await?;
            list.push(r);
            self.save_later(txn, shard, &list);
        }
        self.save_job(txn, &job)?;
        Ok(id)
    }

    /// The job as stored, if it is still the one `job` was claimed as
    /// (same attempt): a worker whose lease ran out must not act on it.
    pub(crate) async fn still_ours(&self, txn: &mut dyn Txn, job: &Job) -> Result<bool, DbError> {
        Ok(self
            .load_job(txn, &job.id)
            .await?
            .is_some_and(|j| j.attempts == job.attempts))
    }

    /// Moves a job's due time where its index entry is.
    pub(crate) async fn set_due(
        &self,
        txn: &mut dyn Txn,
        shard: u32,
        job: &Job,
        due_ms: u64,
    ) -> Result<(), DbError> {
        let r = JobRef {
            id: job.id.clone(),
            due_ms,
            slot: None,
        };
        match job.slot {
            Some(n) => self.put_ref(txn, &self.k().queue_slot(shard, n), &r),
            None => {
                let mut list = self.later(txn, shard).await?;
                for e in list.iter_mut().filter(|e| e.id == job.id) {
                    e.due_ms = due_ms;
                }
                self.save_later(txn, shard, &list);
            }
        }
        Ok(())
    }

    /// Takes a job out of the FIFO into the later list, due at `due_ms`
    /// (a retry waiting out its backoff must not hold up the FIFO).
    pub(crate) async fn postpone(
        &self,
        txn: &mut dyn Txn,
        shard: u32,
        job: &mut Job,
        due_ms: u64,
    ) -> Result<(), DbError> {
        if let Some(n) = job.slot.take() {
            self.free_slot(txn, shard, n).await?;
            let mut list = self.later(txn, shard).await?;
            list.push(JobRef {
                id: job.id.clone(),
                due_ms,
                slot: None,
            });
            self.save_later(txn, shard, &list);
        } else {
            self.set_due(txn, shard, job, due_ms).await?;
        }
        self.save_job(txn, job)?;
        Ok(())
    }

    /// Deletes FIFO slot `n`, and moves the head past it and past any
    /// slots already freed after it.
    pub(crate) async fn free_slot(
        &self,
        txn: &mut dyn Txn,
        shard: u32,
        n: u64,
    ) -> Result<(), DbError> {
        txn.delete(&self.k().queue_slot(shard, n));
        let head_key = self.k().queue_head(shard);
        let seq_key = self.k().queue_seq(shard);
        let counters = txn.get_many(&[head_key.clone(), seq_key.clone()]).await?;
        let mut counters = counters.into_iter();
        let head = number(&head_key, counters.next().flatten())?;
        let seq = number(&seq_key, counters.next().flatten())?;
        if n != head {
            return Ok(());
        }
        let mut next = head + 1;
        'scan: while next < seq {
            let end = (next + WINDOW).min(seq);
            let keys: Vec<String> = (next..end).map(|k| self.k().queue_slot(shard, k)).collect();
            for v in txn.get_many(&keys).await? {
                if v.is_some() {
                    break 'scan;
                }
                next += 1;
            }
        }
        txn.put(&head_key, next.to_string().into_bytes());
        Ok(())
    }

    /// Removes the index entry `found` was read from.
    pub(crate) async fn unindex(
        &self,
        txn: &mut dyn Txn,
        shard: u32,
        found: &JobRef,
    ) -> Result<(), DbError> {
        match found.slot {
            Some(n) => self.free_slot(txn, shard, n).await,
            None => {
                let mut list = self.later(txn, shard).await?;
                list.retain(|r| r.id != found.id);
                self.save_later(txn, shard, &list);
                Ok(())
            }
        }
    }

    /// The ids of every job queued in shard `s`, due or not.
    pub(crate) async fn job_ids(&self, txn: &mut dyn Txn, s: u32) -> Result<Vec<String>, DbError> {
        let counters = txn
            .get_many(&[self.k().queue_head(s), self.k().queue_seq(s)])
            .await?;
        let head = number(&self.k().queue_head(s), counters[0].clone())?;
        let seq = number(&self.k().queue_seq(s), counters[1].clone())?;
        let mut ids: Vec<String> = self
            .later(txn, s)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let keys: Vec<String> = (head..seq).map(|n| self.k().queue_slot(s, n)).collect();
        for (key, v) in keys.iter().zip(txn.get_many(&keys).await?) {
            if let Some(v) = v {
                ids.push(one_ref(key, &v)?.id);
            }
        }
        Ok(ids)
    }

    /// Removes a job and its index entry.
    pub(crate) async fn remove_job(
        &self,
        txn: &mut dyn Txn,
        shard: u32,
        id: &str,
    ) -> Result<(), DbError> {
        let Some(job) = self.load_job(txn, id).await? else {
            return Ok(());
        };
        match job.slot {
            Some(n) => self.free_slot(txn, shard, n).await?,
            None => {
                let mut list = self.later(txn, shard).await?;
                list.retain(|r| r.id != id);
                self.save_later(txn, shard, &list);
            }
        }
        txn.delete(&self.k().job(id));
        Ok(())
    }
}

impl<B: Backend> Db<B> {
    /// Every job due at `now_ms`: per shard, the due ones among the first
    /// [`WINDOW`] of its FIFO, then its due later jobs (two reads in all).
    pub async fn due_jobs(&self, now_ms: u64) -> Result<Vec<(u32, JobRef)>, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let mut keys = Vec::with_capacity(3 * SHARDS as usize);
                for s in 0..SHARDS {
                    keys.push(ctx.k().queue_head(s));
                    keys.push(ctx.k().queue_seq(s));
                    keys.push(ctx.k().queue_later(s));
                }
                let values = txn.get_many(&keys).await?;
                let mut values = values.into_iter();
                let mut due = Vec::new();
                let mut slots = Vec::new();
                let mut owners = Vec::new();
                let mut numbers = Vec::new();
                for s in 0..SHARDS {
                    let i = 3 * s as usize;
                    let head = number(&keys[i], values.next().flatten())?;
                    let seq = number(&keys[i + 1], values.next().flatten())?;
                    for r in refs(&keys[i + 2], values.next().flatten())? {
                        if r.due_ms <= now_ms {
                            due.push((s, r));
                        }
                    }
                    for n in head..seq.min(head + WINDOW) {
                        slots.push(ctx.k().queue_slot(s, n));
                        owners.push(s);
                        numbers.push(n);
                    }
                }
                let fifo = txn.get_many(&slots).await?;
                for (((key, s), n), v) in slots.iter().zip(owners).zip(numbers).zip(fifo) {
                    if let Some(v) = v {
                        let mut r = one_ref(key, &v)?;
                        r.slot = Some(n);
                        if r.due_ms <= now_ms {
                            due.push((s, r));
                        }
                    }
                }
                Ok(due)
            })
        })
        .await
    }

    /// Every queued job (due or not), for operators and tests.
    pub async fn queued_jobs(&self) -> Result<Vec<Job>, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let mut jobs = Vec::new();
                for s in 0..SHARDS {
                    for id in ctx.job_ids(txn, s).await? {
                        jobs.extend(ctx.load_job(txn, &id).await?);
                    }
                }
                Ok(jobs)
            })
        })
        .await
    }

    /// Removes a job that cannot be run at all (its record does not open):
    /// its index entry and record go, so that it is not found due forever.
    pub async fn drop_job(&self, shard: u32, found: &JobRef) -> Result<(), DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                ctx.unindex(txn, shard, found).await?;
                txn.delete(&ctx.k().job(&found.id));
                Ok(())
            })
        })
        .await
    }

    /// Claims a due job (as [`Db::due_jobs`] found it) for `lease_ms`:
    /// counts the attempt and moves its due time to the end of the lease,
    /// so that it comes back if the claimer dies. `None` if it is gone or
    /// not due (another worker has it).
    pub async fn claim(
        &self,
        shard: u32,
        found: &JobRef,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<Job>, DbError> {
        self.unit(move |ctx, txn| {
            Box::pin(async move {
                let job = claim_in(ctx, txn, shard, found, now_ms, lease_ms).await?;
                // Losing a lease in a crash only makes the job due again.
                txn.relax_durability();
                Ok(job)
            })
        })
        .await
    }
}

/// [`Db::claim`] inside a unit (whose durability the caller decides).
pub(super) async fn claim_in(
    ctx: &Ctx<'_>,
    txn: &mut dyn Txn,
    shard: u32,
    found: &JobRef,
    now_ms: u64,
    lease_ms: u64,
) -> Result<Option<Job>, DbError> {
    let Some(mut job) = ctx.load_job(txn, &found.id).await? else {
        // An index entry without its record (never written that
        // way): removed rather than found due forever.
        ctx.unindex(txn, shard, found).await?;
        return Ok(None);
    };
    let due = match job.slot {
        Some(n) => {
            let key = ctx.k().queue_slot(shard, n);
            match get(txn, &key).await? {
                Some(v) => Some(one_ref(&key, &v)?.due_ms),
                None => None,
            }
        }
        None => ctx
            .later(txn, shard)
            .await?
            .into_iter()
            .find(|r| r.id == found.id)
            .map(|r| r.due_ms),
    };
    match due {
        Some(d) if d <= now_ms => {}
        Some(_) => return Ok(None),
        None => {
            // A record without its index entry: removed too.
            txn.delete(&ctx.k().job(&found.id));
            return Ok(None);
        }
    }
    job.attempts += 1;
    ctx.set_due(txn, shard, &job, now_ms + lease_ms).await?;
    ctx.save_job(txn, &job)?;
    Ok(Some(job))
}

#[cfg(test)]
mod tests {
    use crate::db::testing::{T0, db, message, run, sender};
    use crate::identity::Rules;

    #[test]
    fn a_claimed_job_comes_back_when_its_lease_lapses() {
        let (db, _) = db(Rules::default());
        let s = sender("whatsapp", "15551234567", vec![], T0);
        run(db.record_inbound(&message(&s, "wamid.1", "hi"))).unwrap();
        let now = T0 * 1000;
        let due = run(db.due_jobs(now)).unwrap();
        assert_eq!(due.len(), 1, "the agent's turn is queued with the message");
        let (shard, found) = &due[0];
        let job = run(db.claim(*shard, found, now, 5_000))
            .unwrap()
            .expect("claimed");
        assert_eq!(job.attempts, 1);
        // Leased: not due to anyone else, nor claimable twice.
        assert!(run(db.due_jobs(now + 4_999)).unwrap().is_empty());
        assert!(run(db.claim(*shard, found, now, 5_000)).unwrap().is_none());
        // The claimer died: once the lease lapses it is due again.
        let again = run(db.due_jobs(now + 5_000)).unwrap();
        assert_eq!(again.len(), 1);
        let job = run(db.claim(again[0].0, &again[0].1, now + 5_000, 5_000)).unwrap();
        assert_eq!(job.map(|j| j.attempts), Some(2));
    }
}
