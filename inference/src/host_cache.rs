//! The host-memory cache of prompt prefixes: when a slot goes idle, the KV of its
//! prompt moves out of the unified KV cache into host memory (llama.cpp's per-sequence
//! state, `state_seq_get`), and the slot's cells are freed; a new prompt restores the
//! entry sharing its longest prefix (`state_seq_set`) before prefilling the rest.
//!
//! So the KV cache holds only running sequences (an idle prompt there would lengthen
//! every later decode step's attention), while host memory keeps many more prompts
//! than there are slots: the system message with the passages a class keeps
//! retrieving, the earlier turns of each conversation.
//!
//! The cache is bounded in bytes (`--cache-ram`). Saving a prompt that an entry
//! already holds (it begins that entry) only marks the entry used; an entry that the
//! new prompt begins is replaced by it. Eviction takes the entry with the lowest
//! `last used + FAVOUR × restores`: least recently used, but an entry that many
//! prompts restored (a popular passage prefix) outlives one used once.

use llama_cpp_2::token::LlamaToken;

use crate::placement::common_prefix;

/// Ticks of the cache's clock (saves and restores) one restore is worth.
const FAVOUR: u64 = 8;

/// One saved prompt prefix.
struct Entry<S> {
    tokens: Vec<LlamaToken>,
    state: S,
    bytes: usize,
    last_used: u64,
    restores: u64,
}

/// Saved prompt prefixes, `S` being the opaque state of one sequence.
pub(crate) struct HostCache<S> {
    entries: Vec<Entry<S>>,
    bytes: usize,
    limit: usize,
    clock: u64,
}

impl<S> HostCache<S> {
    /// A cache of at most `limit` bytes; 0 turns it off.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            entries: Vec::new(),
            bytes: 0,
            limit,
            clock: 0,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.limit > 0
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether an entry already holds `tokens` (they begin it); marks it used.
    pub(crate) fn holds(&mut self, tokens: &[LlamaToken]) -> bool {
        self.clock += 1;
        let clock = self.clock;
        match self
            .entries
            .iter_mut()
            .find(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(tokens))
        {
            Some(entry) => {
                entry.last_used = clock;
                true
            }
            None => false,
        }
    }

    /// Saves `tokens`' state of `bytes`, replacing the entries it begins with and
    /// evicting until it fits; `false` for a state larger than the whole cache, which
    /// is not kept.
    pub(crate) fn insert(&mut self, tokens: Vec<LlamaToken>, state: S, bytes: usize) -> bool {
        if bytes > self.limit {
            return false;
        }
        self.remove_where(|e| tokens.starts_with(&e.tokens));
        while self.bytes + bytes > self.limit {
            let Some(victim) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used + FAVOUR * e.restores)
                .map(|(i, _)| i)
            else {
                break;
            };
            let entry = self.entries.swap_remove(victim);
            self.bytes -= entry.bytes;
        }
        self.clock += 1;
        self.bytes += bytes;
        self.entries.push(Entry {
            tokens,
            state,
            bytes,
            last_used: self.clock,
            restores: 0,
        });
        true
    }

    fn remove_where(&mut self, gone: impl Fn(&Entry<S>) -> bool) {
        let mut freed = 0;
        self.entries.retain(|e| {
            let remove = gone(e);
            if remove {
                freed += e.bytes;
            }
            !remove
        });
        self.bytes -= freed;
    }

    /// The entry sharing the longest prefix with `prompt`, the smallest of those that
    /// share as much: its index and how many tokens it shares.
    pub(crate) fn longest(&self, prompt: &[LlamaToken]) -> Option<(usize, usize)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt), e.bytes))
            .filter(|&(_, shared, _)| shared > 0)
            .max_by_key(|&(_, shared, bytes)| (shared, std::cmp::Reverse(bytes)))
            .map(|(i, shared, _)| (i, shared))
    }

    /// Entry `index`'s tokens and state.
    pub(crate) fn entry(&self, index: usize) -> (&[LlamaToken], &S) {
        let entry = &self.entries[index];
        (&entry.tokens, &entry.state)
    }

    /// Counts entry `index` as restored: used now, and favoured against eviction.
    pub(crate) fn restored(&mut self, index: usize) {
        self.clock += 1;
        let entry = &mut self.entries[index];
        entry.last_used = self.clock;
        entry.restores += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&t| LlamaToken::new(t)).collect()
    }

    #[test]
    fn the_longest_shared_prefix_is_found() {
        let mut cache = HostCache::new(100);
        cache.insert(tokens(&[1, 2, 3]), "a", 10);
        cache.insert(tokens(&[1, 2, 7, 8, 9]), "b", 10);
        assert_eq!(cache.longest(&tokens(&[1, 2, 7, 8, 4])), Some((1, 4)));
        assert_eq!(cache.longest(&tokens(&[1, 2, 3, 4])), Some((0, 3)));
        assert_eq!(cache.longest(&tokens(&[5])), None);
        let (held, state) = cache.entry(1);
        assert_eq!((held.len(), *state), (5, "b"));
    }

    #[test]
    fn of_entries_sharing_as_much_the_smallest_is_restored() {
        let mut cache = HostCache::new(100);
        cache.insert(tokens(&[1, 2, 3, 9, 9, 9]), "large", 30);
        cache.insert(tokens(&[1, 2, 3, 8]), "small", 10);
        assert_eq!(cache.longest(&tokens(&[1, 2, 3, 4])), Some((1, 3)));
    }

    #[test]
    fn a_longer_prompt_replaces_the_prefix_it_extends_and_a_held_one_is_not_saved() {
        let mut cache = HostCache::new(100);
        cache.insert(tokens(&[1, 2]), "short", 10);
        cache.insert(tokens(&[1, 2, 3, 4]), "long", 20);
        assert_eq!((cache.len(), cache.bytes()), (1, 20));
        assert!(cache.holds(&tokens(&[1, 2, 3])));
        assert!(!cache.holds(&tokens(&[1, 2, 5])));
    }

    #[test]
    fn eviction_keeps_the_bound_and_favours_restored_entries() {
        let mut cache = HostCache::new(30);
        cache.insert(tokens(&[1]), "popular", 10);
        cache.insert(tokens(&[2]), "once", 10);
        cache.restored(0);
        cache.insert(tokens(&[3]), "c", 10);
        // full: the next save evicts the least recently used unpopular entry
        cache.insert(tokens(&[4]), "d", 10);
        assert_eq!(cache.bytes(), 30);
        assert!(cache.holds(&tokens(&[1])), "the restored entry stays");
        assert!(!cache.holds(&tokens(&[2])), "the entry used once went");
        // a state larger than the cache is not kept
        assert!(!cache.insert(tokens(&[5]), "huge", 31));
        assert!(!cache.holds(&tokens(&[5])));
        assert_eq!(cache.bytes(), 30);
    }
}
