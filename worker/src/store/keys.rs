//! Users' integer keys: assigned once per new user, cached once committed.

use super::Row;
use deadpool_postgres::GenericClient;
use shared_events::Source;
use std::collections::HashMap;
use std::sync::Mutex;

/// The keys of a batch's distinct users (sorted), inserting those that have none. Only new
/// users take a sequence value (`NOT EXISTS` first); the sorted order keeps concurrent
/// batches that add the same new users from deadlocking. A user another transaction is
/// adding at the same moment comes back from neither branch (the `INSERT` waits for it to
/// commit, then does nothing; the `SELECT` ran on the snapshot from before): those are
/// read again by [`LOOKUP_SQL`], whose snapshot holds them.
const KEYS_SQL: &str = "\
WITH n AS (SELECT * FROM unnest($1::text[], $2::text[]) AS n(source, user_id)),
new AS (
    INSERT INTO user_keys (source, user_id)
    SELECT source, user_id FROM n
    WHERE NOT EXISTS (SELECT 1 FROM user_keys k WHERE k.source = n.source AND k.user_id = n.user_id)
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    RETURNING user_key, source, user_id)
SELECT user_key, source, user_id FROM new
UNION ALL
SELECT k.user_key, k.source, k.user_id FROM n JOIN user_keys k USING (source, user_id)";

const LOOKUP_SQL: &str = "\
SELECT k.user_key, k.source, k.user_id
FROM unnest($1::text[], $2::text[]) AS n(source, user_id) JOIN user_keys k USING (source, user_id)";

/// Users' keys the worker has seen committed, so that a batch of known users needs no key
/// statement. A key never changes once assigned (`user_keys` rows are never updated or
/// deleted), so an entry cannot go stale. Filled only after a commit: a key inserted by a
/// transaction that rolled back must not be reused. Bounded: when a source's map is full
/// it starts over.
#[derive(Debug, Default)]
pub struct KeyCache {
    by_source: Mutex<[HashMap<String, i32>; Source::ALL.len()]>,
}

/// Most users a [`KeyCache`] holds per source (~80 bytes each).
const KEY_CACHE_USERS: usize = 200_000;

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, [HashMap<String, i32>; Source::ALL.len()]> {
        // A panic elsewhere while holding the lock leaves the maps valid.
        self.by_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers keys a committed transaction read or assigned ([`UserKeys::fetched`]).
    pub fn remember(&self, fetched: Vec<(Source, String, i32)>) {
        let mut maps = self.lock();
        for (source, user, key) in fetched {
            let map = &mut maps[source as usize];
            if map.len() >= KEY_CACHE_USERS {
                map.clear();
            }
            map.insert(user, key);
        }
    }
}

/// The keys of a batch's rows.
#[derive(Debug, Default)]
pub struct UserKeys {
    /// Per row, its user's key.
    pub rows: Vec<Option<i32>>,
    /// The keys that came from the database rather than the cache, for
    /// [`KeyCache::remember`] once the transaction has committed.
    pub fetched: Vec<(Source, String, i32)>,
}

/// The user key of every row, creating the missing ones. The per-user sets need a dense
/// integer per user; assigned here, once per batch, the compactor and the reports' raw
/// reads find it in the row instead of looking it up per event. Users in `cache` need no
/// statement; the caller remembers the others ([`UserKeys::fetched`]) there after its
/// commit. (`None` only for a user whose key vanished between the two statements, which
/// nothing does; readers would look it up.)
pub async fn user_keys(
    client: &impl GenericClient,
    cache: Option<&KeyCache>,
    rows: &[Row],
) -> Result<UserKeys, tokio_postgres::Error> {
    let mut users: Vec<(Source, &str)> = rows
        .iter()
        .map(|r| (r.source, r.user_id.as_str()))
        .collect();
    users.sort_unstable();
    users.dedup();
    let mut keys: Vec<Option<i32>> = vec![None; users.len()];
    if let Some(cache) = cache {
        let maps = cache.lock();
        for (key, (source, user)) in keys.iter_mut().zip(&users) {
            *key = maps[*source as usize].get(*user).copied();
        }
    }
    let mut fetched = Vec::new();
    let mut place = |found: Vec<tokio_postgres::Row>, keys: &mut Vec<Option<i32>>| {
        for row in found {
            let Some(source) = Source::parse(row.get(1)) else {
                continue;
            };
            if let Ok(i) = users.binary_search(&(source, row.get(2))) {
                let key = row.get(0);
                keys[i] = Some(key);
                if cache.is_some() {
                    fetched.push((source, users[i].1.to_owned(), key));
                }
            }
        }
    };
    for statement in [KEYS_SQL, LOOKUP_SQL] {
        // First the users not cached; then those a concurrent batch was adding.
        let missing: Vec<usize> = (0..users.len()).filter(|&i| keys[i].is_none()).collect();
        if missing.is_empty() {
            break;
        }
        let sources: Vec<&str> = missing.iter().map(|&i| users[i].0.as_str()).collect();
        let ids: Vec<&str> = missing.iter().map(|&i| users[i].1).collect();
        let statement = client.prepare_cached(statement).await?;
        place(
            client.query(&statement, &[&sources, &ids]).await?,
            &mut keys,
        );
    }
    let rows = rows
        .iter()
        .map(|r| {
            users
                .binary_search(&(r.source, r.user_id.as_str()))
                .ok()
                .and_then(|i| keys[i])
        })
        .collect();
    Ok(UserKeys { rows, fetched })
}
