//! Per-sequence samplers from a request's sampling parameters.
//!
//! Temperature 0 is greedy decoding. Otherwise top-k, top-p and min-p filter the
//! candidates before temperature and a seeded draw, as llama.cpp's server does, with
//! its defaults for what the request leaves out. A request without a seed gets one
//! derived from its id, so that the same request samples the same way on any worker.

use cauce_nats::RequestId;
use cauce_nats::wire::Sampling;
use llama_cpp_2::sampling::LlamaSampler;

pub const DEFAULT_TEMPERATURE: f32 = 0.8;
pub const DEFAULT_TOP_K: u32 = 40;
pub const DEFAULT_TOP_P: f32 = 0.95;
pub const DEFAULT_MIN_P: f32 = 0.05;

/// The sampler chain for one sequence.
pub fn sampler(sampling: &Sampling, request: &RequestId) -> LlamaSampler {
    let temperature = sampling.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    let top_k = sampling.top_k.unwrap_or(DEFAULT_TOP_K);
    let top_p = sampling.top_p.unwrap_or(DEFAULT_TOP_P);
    let mut chain = Vec::with_capacity(5);
    if top_k > 0 {
        chain.push(LlamaSampler::top_k(top_k.min(i32::MAX as u32) as i32));
    }
    if top_p < 1.0 {
        chain.push(LlamaSampler::top_p(top_p, 1));
    }
    chain.push(LlamaSampler::min_p(DEFAULT_MIN_P, 1));
    chain.push(LlamaSampler::temp(temperature));
    chain.push(LlamaSampler::dist(seed(sampling.seed, request)));
    LlamaSampler::chain_simple(chain)
}

/// The request's seed folded to 32 bits, or a stable one derived from its id.
pub fn seed(seed: Option<u64>, request: &RequestId) -> u32 {
    let value = seed.unwrap_or_else(|| fnv1a(request.as_str().as_bytes()));
    (value ^ (value >> 32)) as u32
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_stable_per_request_and_explicit_seeds_win() {
        let id = RequestId::parse("abc").unwrap();
        assert_eq!(seed(None, &id), seed(None, &id));
        assert_ne!(
            seed(None, &id),
            seed(None, &RequestId::parse("abd").unwrap())
        );
        assert_eq!(seed(Some(7), &id), 7);
    }
}
