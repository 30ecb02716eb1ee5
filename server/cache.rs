//! The daemon's cache of the directory (schools and their keys) and of
//! token look-ups, so that a call costs one small read instead of one per
//! look-up.
//!
//! It is never stale: each call first reads the store's directory version
//! (a counter that triggers move on every change to schools, keys or
//! tokens, whichever process or node makes it), and a cache that saw
//! another version is emptied before it answers. A revoked token or key is
//! refused on the very next call.
//!
//! Calls that arrive together share one read of the version: a call may
//! use a read that *began after the call arrived* (it sees every change
//! committed before the call), so under load one read serves many calls.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use baton::Laestab;

use crate::store::{Result, School, Store, StoreError, TokenHolder};

/// Entries of either map beyond which the map is emptied rather than grown
/// (a stream of unknown tokens must not grow the daemon).
const MAX_ENTRIES: usize = 4096;

/// What the cache holds, all of one directory version.
#[derive(Default)]
struct Entries {
    version: i64,
    tokens: HashMap<[u8; 32], Option<TokenHolder>>,
    schools: HashMap<Laestab, Option<Arc<School>>>,
}

/// The cache, shared by every call.
#[derive(Default)]
pub struct DirectoryCache {
    entries: Mutex<Entries>,
    /// The last read of the version (`None`: it failed) and when it began;
    /// held while a read is under way, so that calls queue behind it
    /// rather than read too.
    last_read: tokio::sync::Mutex<Option<(Instant, Option<i64>)>>,
}

/// The cache as of one directory version, for one call.
pub struct View<'a, S> {
    cache: &'a DirectoryCache,
    store: &'a S,
    version: i64,
}

impl DirectoryCache {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        // The maps hold no invariant a panicking holder could break.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the directory version and returns a view at it, emptying the
    /// cache if the version moved.
    pub async fn view<'a, S: Store>(&'a self, store: &'a S) -> Result<View<'a, S>> {
        let version = self.current_version(store).await?;
        let mut entries = self.lock();
        // Versions only grow; a view from an older read (that lost a race
        // to the lock) simply does not use the cache.
        if version > entries.version {
            entries.tokens.clear();
            entries.schools.clear();
            entries.version = version;
        }
        Ok(View {
            cache: self,
            store,
            version,
        })
    }
}

impl DirectoryCache {
    /// A view at the version the cache last saw, without reading it: for a
    /// call whose outcome is settled later against the store's version
    /// (an upload commits only if the version is still this one).
    pub fn cached_view<'a, S: Store>(&'a self, store: &'a S) -> View<'a, S> {
        let version = self.lock().version;
        View {
            cache: self,
            store,
            version,
        }
    }

    /// The directory version as of no earlier than now.
    async fn current_version<S: Store>(&self, store: &S) -> Result<i64> {
        let arrived = Instant::now();
        let mut last = self.last_read.lock().await;
        if let Some((began, outcome)) = *last
            && began >= arrived
        {
            // A failed read is shared too: with the database down, queued
            // calls fail together instead of each waiting out its own.
            return outcome.ok_or_else(|| {
                StoreError::Unavailable("reading the directory version failed".into())
            });
        }
        let began = Instant::now();
        let read = store.directory_version().await;
        *last = Some((began, read.as_ref().ok().copied()));
        read
    }
}

impl<S: Store> View<'_, S> {
    /// The directory version this view answers for.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Who holds an active token. Unknown tokens are not kept, so a stream
    /// of them cannot push the real ones out.
    pub async fn token_holder(&self, token_hash: [u8; 32]) -> Result<Option<TokenHolder>> {
        self.cached(
            |e| &mut e.tokens,
            token_hash,
            Option::is_some,
            self.store.token_holder(token_hash),
        )
        .await
    }

    /// One school with all its keys.
    pub async fn school(&self, laestab: &Laestab) -> Result<Option<Arc<School>>> {
        let load = async { Ok(self.store.school(laestab).await?.map(Arc::new)) };
        self.cached(|e| &mut e.schools, *laestab, |_| true, load)
            .await
    }

    /// `key` from the map `pick` chooses, or `load`ed and kept there when
    /// `keep` says so and the cache is still at this view's version (the
    /// load began after the version was read, so it is at least as new).
    async fn cached<K, V>(
        &self,
        pick: fn(&mut Entries) -> &mut HashMap<K, V>,
        key: K,
        keep: fn(&V) -> bool,
        load: impl Future<Output = Result<V>>,
    ) -> Result<V>
    where
        K: Eq + Hash,
        V: Clone,
    {
        {
            let mut entries = self.cache.lock();
            if entries.version == self.version
                && let Some(hit) = pick(&mut entries).get(&key)
            {
                return Ok(hit.clone());
            }
        }
        let found = load.await?;
        let mut entries = self.cache.lock();
        if entries.version == self.version && keep(&found) {
            let map = pick(&mut entries);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key, found.clone());
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::audit::Event;
    use crate::store::sqlite::Sqlite;
    use crate::store::{Directory as _, NewSchool};
    use baton::keys::Role;

    fn school() -> NewSchool {
        NewSchool {
            laestab: Laestab::parse("8612001").unwrap(),
            name: "A".into(),
            phase: "primary".into(),
            urn: String::new(),
        }
    }

    #[tokio::test]
    async fn a_change_by_another_process_empties_the_cache_on_the_next_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // The daemon's handle, and a second one as `batond admin` would open.
        let daemon = Sqlite::open(&path).await.unwrap();
        let admin = Sqlite::open(&path).await.unwrap();
        let a = school();
        let key = crate::store::conformance::key(1);
        let event = || Event::by_admin("test", "x");
        admin
            .add_school(&a, [7; 32], &[Role::Dsl, Role::Staff], 1, i64::MAX, event())
            .await
            .unwrap();
        admin
            .redeem(&a.laestab, [7; 32], &key, [1; 32], 2, event())
            .await
            .unwrap();

        let cache = DirectoryCache::default();
        let view = cache.view(&daemon).await.unwrap();
        assert_eq!(
            view.token_holder([1; 32]).await.unwrap().map(|h| h.school),
            Some(a.laestab)
        );
        assert_eq!(
            view.token_holder([2; 32]).await.unwrap().map(|h| h.school),
            None
        );
        let keys = view.school(&a.laestab).await.unwrap().unwrap().keys.len();
        assert_eq!(keys, 1);
        // Cached: the same answers from the same version.
        let view = cache.view(&daemon).await.unwrap();
        assert_eq!(
            view.token_holder([1; 32]).await.unwrap().map(|h| h.school),
            Some(a.laestab)
        );

        admin.revoke_tokens(&a.laestab, 3, event()).await.unwrap();
        admin
            .add_key(&a.laestab, &crate::store::conformance::key(2), event())
            .await
            .unwrap();
        let view = cache.view(&daemon).await.unwrap();
        assert_eq!(
            view.token_holder([1; 32]).await.unwrap().map(|h| h.school),
            None
        );
        let keys = view.school(&a.laestab).await.unwrap().unwrap().keys.len();
        assert_eq!(keys, 2);
    }

    #[tokio::test]
    async fn unknown_tokens_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("t.db")).await.unwrap();
        let cache = DirectoryCache::default();
        let view = cache.view(&store).await.unwrap();
        for i in 0..100_u64 {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&i.to_le_bytes());
            assert_eq!(
                view.token_holder(hash).await.unwrap().map(|h| h.school),
                None
            );
        }
        assert!(cache.lock().tokens.is_empty());
    }
}
