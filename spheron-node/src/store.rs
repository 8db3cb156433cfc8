//! The provider node's durable state in an embedded SQLite database: the chain cursor, the
//! orders it bid on, its leases with their workload state, and the nonces of signed gateway
//! requests. Every change is written before it is acted on, so a restart (kill -9 included)
//! resumes from here: no lease forgotten, none launched twice, no nonce accepted twice.

use crate::error::Result;
use crate::wire::WorkState;
use alloy::primitives::{Address, B256};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

/// A lease as the provider node records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// Lease id (= order id on chain).
    pub id: u64,
    /// The tenant recorded on chain.
    pub tenant: Address,
    /// GPUs leased.
    pub gpus: u32,
    /// Model offered in the winning bid.
    pub model: String,
    /// Node of the inventory the GPUs were reserved on (empty before reservation).
    pub node: String,
    /// Chain start of the lease, unix seconds.
    pub start: u64,
    /// Ordered duration, seconds.
    pub duration_secs: u64,
    /// The workload's state.
    pub work: WorkState,
    /// Leader process id of the local workload, once launched.
    pub pid: Option<u32>,
    /// Whether the lease is open on chain as last seen.
    pub open_on_chain: bool,
    /// Unix seconds the workload started running.
    pub started_at: Option<u64>,
    /// Unix seconds it ended.
    pub ended_at: Option<u64>,
}

/// The database. All methods are short synchronous statements behind one mutex.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bids (order_id INTEGER PRIMARY KEY, price TEXT NOT NULL, model TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    gpus INTEGER NOT NULL,
    model TEXT NOT NULL,
    node TEXT NOT NULL,
    start INTEGER NOT NULL,
    duration INTEGER NOT NULL,
    work TEXT NOT NULL,
    pid INTEGER,
    open_on_chain INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER
);
CREATE TABLE IF NOT EXISTS nonces (
    signer TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expiry INTEGER NOT NULL,
    PRIMARY KEY (signer, nonce)
);
";

fn work_json(w: &WorkState) -> String {
    serde_json::to_string(w).unwrap_or_else(|_| "{\"state\":\"awaiting_manifest\"}".into())
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// An in-memory database (tests).
    pub fn memory() -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next chain block to process, if one was recorded.
    pub fn cursor(&self) -> Result<Option<u64>> {
        let v: Option<String> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'cursor'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(v.and_then(|s| s.parse().ok()))
    }

    /// Records the next chain block to process.
    pub fn set_cursor(&self, next_block: u64) -> Result<()> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES ('cursor', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![next_block.to_string()],
        )?;
        Ok(())
    }

    /// Records a bid on `order`; false if one was recorded before (never bid twice).
    pub fn record_bid(&self, order: u64, price: u128, model: &str) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO bids (order_id, price, model) VALUES (?1, ?2, ?3)",
            params![to_i64(order), price.to_string(), model],
        )?;
        Ok(n == 1)
    }

    /// The model this node bid with on `order`, if it bid.
    pub fn bid_model(&self, order: u64) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT model FROM bids WHERE order_id = ?1",
                params![to_i64(order)],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Inserts a newly matched lease; false (and nothing changed) if it is known already.
    pub fn insert_lease(&self, row: &LeaseRow) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO leases
             (id, tenant, gpus, model, node, start, duration, work, pid, open_on_chain, started_at, ended_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                to_i64(row.id),
                row.tenant.to_string(),
                row.gpus,
                row.model,
                row.node,
                to_i64(row.start),
                to_i64(row.duration_secs),
                work_json(&row.work),
                row.pid,
                row.open_on_chain,
                row.started_at.map(to_i64),
                row.ended_at.map(to_i64),
            ],
        )?;
        Ok(n == 1)
    }

    /// One lease.
    pub fn lease(&self, id: u64) -> Result<Option<LeaseRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, tenant, gpus, model, node, start, duration, work, pid, open_on_chain, started_at, ended_at
                 FROM leases WHERE id = ?1",
                params![to_i64(id)],
                row,
            )
            .optional()?)
    }

    /// Every lease, by id.
    pub fn leases(&self) -> Result<Vec<LeaseRow>> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, tenant, gpus, model, node, start, duration, work, pid, open_on_chain, started_at, ended_at
             FROM leases ORDER BY id",
        )?;
        let rows = st
            .query_map([], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Leases that still need attention: open on chain or with a workload not yet terminal.
    pub fn live_leases(&self) -> Result<Vec<LeaseRow>> {
        Ok(self
            .leases()?
            .into_iter()
            .filter(|l| l.open_on_chain || !l.work.is_terminal())
            .collect())
    }

    /// Moves a lease's workload to `work` only if it is in one of the states `from` accepts;
    /// returns whether it moved. This compare-and-set is what makes a launch happen once.
    pub fn transition(
        &self,
        id: u64,
        from: impl Fn(&WorkState) -> bool,
        work: &WorkState,
        now: u64,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current: Option<String> = tx
            .query_row(
                "SELECT work FROM leases WHERE id = ?1",
                params![to_i64(id)],
                |r| r.get(0),
            )
            .optional()?;
        let Some(current) = current else {
            return Ok(false);
        };
        let current: WorkState =
            serde_json::from_str(&current).unwrap_or(WorkState::AwaitingManifest);
        if !from(&current) {
            return Ok(false);
        }
        let started = matches!(work, WorkState::Running).then_some(to_i64(now));
        let ended = work.is_terminal().then_some(to_i64(now));
        tx.execute(
            "UPDATE leases SET work = ?2,
                 started_at = COALESCE(started_at, ?3),
                 ended_at = COALESCE(ended_at, ?4)
             WHERE id = ?1",
            params![to_i64(id), work_json(work), started, ended],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Records the workload's leader pid.
    pub fn set_pid(&self, id: u64, pid: Option<u32>) -> Result<()> {
        self.conn().execute(
            "UPDATE leases SET pid = ?2 WHERE id = ?1",
            params![to_i64(id), pid],
        )?;
        Ok(())
    }

    /// Records the lease's billing start as the chain has it (the provider's confirmation).
    pub fn set_start(&self, id: u64, start: u64) -> Result<()> {
        self.conn().execute(
            "UPDATE leases SET start = ?2 WHERE id = ?1",
            params![to_i64(id), to_i64(start)],
        )?;
        Ok(())
    }

    /// Records the node the GPUs were reserved on.
    pub fn set_node(&self, id: u64, node: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE leases SET node = ?2 WHERE id = ?1",
            params![to_i64(id), node],
        )?;
        Ok(())
    }

    /// Records that the lease closed on chain.
    pub fn set_closed_on_chain(&self, id: u64) -> Result<()> {
        self.conn().execute(
            "UPDATE leases SET open_on_chain = 0 WHERE id = ?1",
            params![to_i64(id)],
        )?;
        Ok(())
    }

    /// Records `nonce` of `signer` valid until `expiry`; false if it was recorded before.
    /// Nonces past their expiry are pruned (their requests are refused as expired anyway).
    pub fn use_nonce(&self, signer: Address, nonce: B256, expiry: u64, now: u64) -> Result<bool> {
        let conn = self.conn();
        conn.execute("DELETE FROM nonces WHERE expiry < ?1", params![to_i64(now)])?;
        let n = conn.execute(
            "INSERT OR IGNORE INTO nonces (signer, nonce, expiry) VALUES (?1, ?2, ?3)",
            params![signer.to_string(), nonce.to_string(), to_i64(expiry)],
        )?;
        Ok(n == 1)
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeaseRow> {
    let tenant: String = r.get(1)?;
    let work: String = r.get(7)?;
    Ok(LeaseRow {
        id: to_u64(r.get(0)?),
        tenant: tenant.parse().unwrap_or(Address::ZERO),
        gpus: r.get(2)?,
        model: r.get(3)?,
        node: r.get(4)?,
        start: to_u64(r.get(5)?),
        duration_secs: to_u64(r.get(6)?),
        work: serde_json::from_str(&work).unwrap_or(WorkState::Failed {
            reason: format!("unreadable state {work:?}"),
        }),
        pid: r.get(8)?,
        open_on_chain: r.get(9)?,
        started_at: r.get::<_, Option<i64>>(10)?.map(to_u64),
        ended_at: r.get::<_, Option<i64>>(11)?.map(to_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: u64) -> LeaseRow {
        LeaseRow {
            id,
            tenant: Address::repeat_byte(7),
            gpus: 1,
            model: "h100-sxm".into(),
            node: String::new(),
            start: 100,
            duration_secs: 3600,
            work: WorkState::AwaitingManifest,
            pid: None,
            open_on_chain: true,
            started_at: None,
            ended_at: None,
        }
    }

    #[test]
    fn survives_reopen_and_launches_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        {
            let s = Store::open(&path).unwrap();
            s.set_cursor(42).unwrap();
            assert!(s.insert_lease(&lease(5)).unwrap());
            assert!(
                !s.insert_lease(&lease(5)).unwrap(),
                "a replayed event inserts nothing"
            );
            let awaiting = |w: &WorkState| *w == WorkState::AwaitingManifest;
            assert!(s.transition(5, awaiting, &WorkState::Launching, 1).unwrap());
            assert!(!s.transition(5, awaiting, &WorkState::Launching, 2).unwrap());
            assert!(s.record_bid(9, 10, "l4").unwrap());
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.cursor().unwrap(), Some(42));
        assert_eq!(s.lease(5).unwrap().unwrap().work, WorkState::Launching);
        assert!(
            !s.record_bid(9, 10, "l4").unwrap(),
            "never bid twice, even after a restart"
        );
        let awaiting = |w: &WorkState| *w == WorkState::AwaitingManifest;
        assert!(!s.transition(5, awaiting, &WorkState::Launching, 3).unwrap());
    }

    #[test]
    fn nonces_are_single_use_and_pruned() {
        let s = Store::memory().unwrap();
        let who = Address::repeat_byte(1);
        let n = B256::repeat_byte(2);
        assert!(s.use_nonce(who, n, 100, 50).unwrap());
        assert!(!s.use_nonce(who, n, 100, 60).unwrap());
        // Another signer may use the same bytes.
        assert!(s.use_nonce(Address::repeat_byte(3), n, 100, 60).unwrap());
        // After expiry the row is pruned; the gateway refuses the request as expired anyway.
        assert!(s.use_nonce(who, n, 300, 200).unwrap());
    }

    #[test]
    fn terminal_state_sets_end_time() {
        let s = Store::memory().unwrap();
        s.insert_lease(&lease(1)).unwrap();
        s.transition(1, |_| true, &WorkState::Running, 10).unwrap();
        s.transition(1, |_| true, &WorkState::Exited { exit_code: Some(0) }, 20)
            .unwrap();
        let l = s.lease(1).unwrap().unwrap();
        assert_eq!((l.started_at, l.ended_at), (Some(10), Some(20)));
        assert!(s.live_leases().unwrap().len() == 1, "still open on chain");
        s.set_closed_on_chain(1).unwrap();
        assert!(s.live_leases().unwrap().is_empty());
    }
}
