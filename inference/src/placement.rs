//! Where a new prompt runs: which free slot, and which cached prefix it starts from
//! ([`place`]), so that prompts sharing a prefix (the system message, the same
//! question, the next turn of a conversation) skip prefilling it again.

use llama_cpp_2::token::LlamaToken;

/// What placing a prompt looks at in a slot.
pub(crate) struct SlotView<'a> {
    pub(crate) cached: &'a [LlamaToken],
    pub(crate) last_used: u64,
    pub(crate) free: bool,
}

/// Where a new prompt goes, and which cached prefix it starts from.
#[derive(Debug, PartialEq)]
pub(crate) struct Placement {
    /// The free slot that runs it.
    pub(crate) slot: usize,
    /// `(source slot, tokens)`: the source's first tokens (equal to the prompt's) are
    /// shared into the slot's sequence instead of being prefilled again.
    pub(crate) copy: Option<(usize, usize)>,
}

/// Places `prompt`. A free slot whose cached tokens the prompt repeats or continues
/// (it keeps at least 90% of them: the same question, the next turn of a conversation)
/// runs it in place. Otherwise the least recently used free slot (a never-used one
/// first) runs it, so that the slots keep as many different prompts as they can, and
/// starts from the longest prefix any slot, busy or free, holds: the system message and
/// the chat template's header that every prompt shares are computed once, not per slot.
pub(crate) fn place(slots: &[SlotView<'_>], prompt: &[LlamaToken]) -> Option<Placement> {
    // at least one prompt token is decoded again, to get logits to sample from
    let usable = prompt.len().saturating_sub(1);
    let shared = |slot: &SlotView<'_>| common_prefix(slot.cached, prompt).min(usable);
    let free = || slots.iter().enumerate().filter(|(_, s)| s.free);
    let in_place = free()
        .map(|(i, s)| (i, s, shared(s)))
        .filter(|&(_, s, n)| n > 0 && n * 10 >= s.cached.len() * 9)
        .max_by_key(|&(_, _, n)| n);
    if let Some((slot, _, _)) = in_place {
        return Some(Placement { slot, copy: None });
    }
    let (slot, target) = free().min_by_key(|(_, s)| s.last_used)?;
    let own = shared(target);
    let copy = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (i, shared(s)))
        .max_by_key(|&(_, n)| n)
        .filter(|&(source, n)| source != slot && n > own);
    Some(Placement { slot, copy })
}

pub(crate) fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&t| LlamaToken::new(t)).collect()
    }

    /// Slots as `(cached tokens, last used, free)`.
    fn place_in(slots: &[(&[i32], u64, bool)], prompt: &[i32]) -> Option<Placement> {
        let cached = slots.iter().map(|s| tokens(s.0)).collect::<Vec<_>>();
        let views = slots
            .iter()
            .zip(&cached)
            .map(|(&(_, last_used, free), cached)| SlotView {
                cached,
                last_used,
                free,
            })
            .collect::<Vec<_>>();
        place(&views, &tokens(prompt))
    }

    fn placed(slot: usize, copy: Option<(usize, usize)>) -> Option<Placement> {
        Some(Placement { slot, copy })
    }

    // tokens 1 and 2 stand for the system message, token 1 for the template's header
    const A: &[i32] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    const B: &[i32] = &[1, 20, 21, 22];

    #[test]
    fn a_repeated_or_continued_prompt_runs_in_its_slot() {
        let slots = [(A, 5, true), (B, 1, true), (&[][..], 0, true)];
        assert_eq!(place_in(&slots, A), placed(0, None));
        let next_turn = [A, &[11, 12, 13]].concat();
        assert_eq!(place_in(&slots, &next_turn), placed(0, None));
    }

    #[test]
    fn a_new_question_takes_the_oldest_slot_and_shares_the_common_prefix() {
        // the unused slot 2 runs it, starting from the system message slot 0 holds
        let slots = [(A, 5, true), (B, 1, true), (&[][..], 0, true)];
        assert_eq!(place_in(&slots, &[1, 2, 30, 31]), placed(2, Some((0, 2))));
        // every slot used: the least recently used one, sharing the longer prefix of
        // another slot, or keeping its own when that is the longest
        let slots = [(A, 5, true), (B, 1, true)];
        assert_eq!(place_in(&slots, &[1, 2, 30, 31]), placed(1, Some((0, 2))));
        let slots = [(A, 1, true), (B, 5, true)];
        assert_eq!(place_in(&slots, &[1, 2, 30, 31]), placed(0, None));
    }

    #[test]
    fn a_busy_slot_lends_its_prefix_but_does_not_run_the_prompt() {
        let slots = [(A, 5, false), (&[][..], 0, true)];
        assert_eq!(place_in(&slots, A), placed(1, Some((0, A.len() - 1))));
        assert_eq!(place_in(&slots, &[1, 2, 3, 4, 40]), placed(1, Some((0, 4))));
    }

    #[test]
    fn no_free_slot_means_none() {
        assert_eq!(place_in(&[(A, 1, false)], A), None);
        assert_eq!(place_in(&[], A), None);
    }
}
