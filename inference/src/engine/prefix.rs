//! Where a slot's KV comes from before its prompt is prefilled (its own cached tokens,
//! a busy slot's, a host cache entry's), and where an idle slot's prompt goes
//! ([`crate::host_cache`]).

use std::sync::atomic::Ordering;

use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::token::LlamaToken;
use tracing::warn;

use super::Batcher;
use crate::placement::common_prefix;

/// Idle prompts shorter than this stay in their slots rather than in the host cache
/// (they take a few cells, and the template's header alone is cheap to compute).
const MIN_PARKED_TOKENS: usize = 32;

impl Batcher<'_> {
    /// Fills slot `index`'s KV with the longest prefix of `prompt` it can get without
    /// computing it: its own cached tokens, a busy slot's (`copy`), or a host cache
    /// entry, whichever shares the most.
    pub(super) fn start_from(
        &mut self,
        index: usize,
        copy: Option<(usize, usize)>,
        prompt: &[LlamaToken],
    ) {
        // at least one prompt token is decoded again, to get logits to sample from
        let usable = prompt.len() - 1;
        let seq_id = self.slots[index].seq_id;
        let from_slots = match copy {
            Some((_, shared)) => shared,
            None => common_prefix(&self.slots[index].cached, prompt).min(usable),
        };
        if self.host.enabled() {
            self.stats
                .host_cache_lookups
                .fetch_add(1, Ordering::Relaxed);
        }
        // copying an entry's KV costs far less than computing even a few of its tokens
        if let Some((entry, shared)) = self.host.longest(prompt)
            && shared.min(usable) > from_slots
            && self.restore(index, entry, shared.min(usable))
        {
            return;
        }
        if let Some((source, shared)) = copy {
            // the unified KV cache lets two sequences share cells: the target
            // takes the source's prefix without computing it again
            let source_seq = self.slots[source].seq_id;
            let _ = self.ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
            let copied =
                self.ctx
                    .copy_kv_cache_seq(source_seq, seq_id, Some(0), Some(shared as u32));
            let slot = &mut self.slots[index];
            slot.cached.clear();
            if copied.is_ok() {
                slot.cached.extend_from_slice(&prompt[..shared]);
            }
        } else {
            self.trim(index, from_slots);
        }
    }

    /// Keeps the first `keep` cached tokens of slot `index`, or none when llama.cpp
    /// cannot cut the sequence there.
    pub(super) fn trim(&mut self, index: usize, keep: usize) {
        let slot = &mut self.slots[index];
        let seq_id = slot.seq_id as u32;
        let trimmed = self
            .ctx
            .clear_kv_cache_seq(Some(seq_id), Some(keep as u32), None);
        if matches!(trimmed, Ok(true)) {
            slot.cached.truncate(keep);
        } else {
            let _ = self.ctx.clear_kv_cache_seq(Some(seq_id), None, None);
            slot.cached.clear();
        }
    }

    /// Restores host cache entry `entry` into slot `index`, keeping its first `keep`
    /// tokens; `false` (and an empty slot) when llama.cpp refused the state.
    fn restore(&mut self, index: usize, entry: usize, keep: usize) -> bool {
        let seq_id = self.slots[index].seq_id;
        let _ = self.ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
        let (tokens, state) = self.host.entry(entry);
        let restored = self.ctx.state_seq_set(state, seq_id);
        let slot = &mut self.slots[index];
        slot.cached.clear();
        if let Err(err) = restored {
            warn!(error = %err, "restoring a prompt from the host cache failed");
            let _ = self.ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
            return false;
        }
        slot.cached.extend_from_slice(tokens);
        self.host.restored(entry);
        self.trim(index, keep);
        let stats = &self.stats;
        stats.host_cache_restores.fetch_add(1, Ordering::Relaxed);
        stats
            .host_cache_restored_tokens
            .fetch_add(self.slots[index].cached.len() as u64, Ordering::Relaxed);
        true
    }

    /// Moves an idle slot's prompt to the host cache and frees its cells; a prompt the
    /// cache already holds is only freed. Without a host cache, or when it is short,
    /// it stays in the slot.
    pub(super) fn park(&mut self, index: usize) {
        let slot = &self.slots[index];
        if !self.host.enabled() || slot.cached.len() < MIN_PARKED_TOKENS {
            return;
        }
        let seq_id = slot.seq_id;
        if !self.host.holds(&slot.cached) {
            match self.ctx.state_seq_get(seq_id, LlamaStateSeqFlags::empty()) {
                Ok(state) => {
                    let bytes = state.byte_len();
                    if !self.host.insert(slot.cached.clone(), state, bytes) {
                        // larger than the whole host cache: kept in the slot instead
                        return;
                    }
                }
                Err(err) => {
                    // kept in the slot instead
                    warn!(error = %err, "saving a prompt to the host cache failed");
                    return;
                }
            }
        }
        let _ = self.ctx.clear_kv_cache_seq(Some(seq_id as u32), None, None);
        self.slots[index].cached.clear();
        let stats = &self.stats;
        stats
            .host_cache_bytes
            .store(self.host.bytes() as u64, Ordering::Relaxed);
        stats
            .host_cache_entries
            .store(self.host.len() as u64, Ordering::Relaxed);
    }
}
