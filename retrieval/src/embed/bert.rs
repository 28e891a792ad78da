//! A BERT encoder's forward pass (all-MiniLM-L6-v2: 6 layers, 384 wide, 12 heads), one
//! text at a time, in plain Rust on one thread.
//!
//! A search embeds one short question, where a tensor library's fixed cost per
//! operation (dispatch, allocation, packing the weights for a matrix kernel, waking
//! threads) outweighs the arithmetic: candle took about 18 ms for a 10-token question,
//! 13 ms of it fixed. Here the weights are packed at load in tiles of 32 outputs (16
//! without AVX-512), each read in order, once per text, and applied to four tokens at
//! a time with the sums in registers (each input broadcast to a row of outputs, no
//! horizontal sums), so a 10-token question takes about 4 ms and a text is never
//! padded to a batch's longest.
//! Read in the file's order, a tile's weights were a strided walk the CPU's prefetcher
//! missed: twice the time.

use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors};

/// BERT's layer norm epsilon.
const EPS: f32 = 1e-12;

/// The model's shape, as `config.json` gives it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Shape {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    pub hidden_act: String,
}

/// The encoder's weights, as `f32`.
pub struct Bert {
    shape: Shape,
    /// `[vocab][hidden]`, `[positions][hidden]`, and the first token type's row.
    words: Vec<f32>,
    positions: Vec<f32>,
    token_type: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
}

struct Layer {
    /// Query, key and value in one: `[3 · hidden][hidden]`.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// `y = x · Wᵀ + b`. The file's `W` is `[outputs][inputs]`; it is kept packed, in
/// tiles of [`OUTS`] outputs (the last padded with zeros), each `[inputs][OUTS]`, so that
/// a tile's weights are read in order.
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Bert {
    /// Reads the weights out of a `model.safetensors` file's bytes.
    pub fn load(bytes: &[u8], shape: Shape) -> Result<Self, String> {
        if shape.hidden_act != "gelu"
            || !shape.hidden_size.is_multiple_of(shape.num_attention_heads)
        {
            return Err(format!("unsupported model shape {shape:?}"));
        }
        let file = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
        let mut tensors = Tensors::new(&file);
        let h = shape.hidden_size;
        let words = tensors.take("embeddings.word_embeddings.weight", shape.vocab_size * h)?;
        let positions = tensors.take(
            "embeddings.position_embeddings.weight",
            shape.max_position_embeddings * h,
        )?;
        let mut token_type = tensors.take("embeddings.token_type_embeddings.weight", 2 * h)?;
        token_type.truncate(h);
        let norm = tensors.norm("embeddings.LayerNorm", h)?;
        let layers = (0..shape.num_hidden_layers)
            .map(|i| tensors.layer(&format!("encoder.layer.{i}"), &shape))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            shape,
            words,
            positions,
            token_type,
            norm,
            layers,
        })
    }

    /// The mean of the last hidden states of `ids` (at most the model's positions),
    /// not yet normalized.
    pub fn mean_hidden(&self, ids: &[u32]) -> Result<Vec<f32>, String> {
        let h = self.shape.hidden_size;
        let n = ids.len().min(self.shape.max_position_embeddings);
        let mut x = vec![0.0; n * h];
        for (t, &id) in ids[..n].iter().enumerate() {
            let id = id as usize;
            if id >= self.shape.vocab_size {
                return Err(format!("token id {id} is outside the vocabulary"));
            }
            let row = &mut x[t * h..(t + 1) * h];
            let word = &self.words[id * h..(id + 1) * h];
            let position = &self.positions[t * h..(t + 1) * h];
            for (k, v) in row.iter_mut().enumerate() {
                *v = word[k] + position[k] + self.token_type[k];
            }
        }
        self.norm.apply(&mut x, h);
        for layer in &self.layers {
            layer.forward(&mut x, n, &self.shape);
        }
        let mut mean = vec![0.0; h];
        for row in x.chunks_exact(h) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
        }
        let count = n.max(1) as f32;
        mean.iter_mut().for_each(|m| *m /= count);
        Ok(mean)
    }
}

impl Layer {
    /// One encoder layer over the `n` token rows of `x`, in place.
    fn forward(&self, x: &mut [f32], n: usize, shape: &Shape) {
        let h = shape.hidden_size;
        let qkv = self.qkv.apply(x, n);
        let context = attention(&qkv, n, h, shape.num_attention_heads);
        let mut attended = self.attention_out.apply(&context, n);
        attended.iter_mut().zip(x.iter()).for_each(|(a, r)| *a += r);
        self.attention_norm.apply(&mut attended, h);
        let mut up = self.up.apply(&attended, n);
        up.iter_mut().for_each(|v| *v = gelu(*v));
        let mut out = self.down.apply(&up, n);
        out.iter_mut().zip(&attended).for_each(|(o, r)| *o += r);
        self.out_norm.apply(&mut out, h);
        x.copy_from_slice(&out);
    }
}

/// Scaled dot-product self-attention over the `n` rows of `qkv` (`[n][3 · h]`:
/// queries, keys, values), every token seeing every token.
fn attention(qkv: &[f32], n: usize, h: usize, heads: usize) -> Vec<f32> {
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let row = |t: usize, part: usize, head: usize| {
        let start = t * 3 * h + part * h + head * d;
        &qkv[start..start + d]
    };
    let mut context = vec![0.0; n * h];
    let mut scores = vec![0.0; n];
    for head in 0..heads {
        for i in 0..n {
            let query = row(i, 0, head);
            for (j, score) in scores.iter_mut().enumerate() {
                *score = dot(query, row(j, 1, head)) * scale;
            }
            softmax(&mut scores);
            let out = &mut context[i * h + head * d..i * h + (head + 1) * d];
            for (j, &p) in scores.iter().enumerate() {
                out.iter_mut()
                    .zip(row(j, 2, head))
                    .for_each(|(o, v)| *o += p * v);
            }
        }
    }
    context
}

impl Linear {
    /// The file's `[outputs][inputs]` weights packed in tiles of [`OUTS`] outputs.
    fn packed(mut self) -> Self {
        let inputs = self.inputs;
        let mut packed = vec![0.0; inputs * self.bias.len().next_multiple_of(OUTS)];
        for (o, row) in self.weight.chunks_exact(inputs).enumerate() {
            let tile = &mut packed[(o / OUTS) * inputs * OUTS..];
            for (i, w) in row.iter().enumerate() {
                tile[i * OUTS + o % OUTS] = *w;
            }
        }
        self.weight = packed;
        self
    }

    /// `x` holds `n` rows of `inputs`; the result `n` rows of outputs, computed
    /// [`TOKENS`] rows by [`OUTS`] outputs at a time so that the sums stay in registers,
    /// all the rows for each tile, so that its weights come from memory once.
    fn apply(&self, x: &[f32], n: usize) -> Vec<f32> {
        let (inputs, outputs) = (self.inputs, self.bias.len());
        let mut y = vec![0.0; n * outputs];
        for o in (0..outputs).step_by(OUTS) {
            let weights = &self.weight[o * inputs..(o + OUTS) * inputs];
            let cols = OUTS.min(outputs - o);
            for t in (0..n).step_by(TOKENS) {
                let rows = (n - t).min(TOKENS);
                // a short last tile repeats its last row, whose extra sums are not kept
                let xs: [&[f32]; TOKENS] = std::array::from_fn(|j| {
                    let r = t + j.min(rows - 1);
                    &x[r * inputs..(r + 1) * inputs]
                });
                let sums = tile(weights, xs);
                for (j, row) in sums[..rows].iter().enumerate() {
                    let start = (t + j) * outputs + o;
                    for (k, sum) in row[..cols].iter().enumerate() {
                        y[start + k] = sum + self.bias[o + k];
                    }
                }
            }
        }
        y
    }
}

/// Tokens a tile of a matrix product holds.
const TOKENS: usize = 4;
/// Outputs a tile holds: two vector registers' worth a token (512-bit ones where the
/// CPU has them), so that a tile's sums are eight independent chains that fit the
/// registers.
const OUTS: usize = if cfg!(target_feature = "avx512f") {
    32
} else {
    16
};

/// The sums of one tile's [`OUTS`] outputs for the [`TOKENS`] rows `xs`, its
/// `weights` being `[inputs][OUTS]`: each input broadcast to a row of outputs.
#[inline(never)]
fn tile(weights: &[f32], xs: [&[f32]; TOKENS]) -> [[f32; OUTS]; TOKENS] {
    let mut acc = [[0.0f32; OUTS]; TOKENS];
    let (rows, _) = weights.as_chunks::<OUTS>();
    let xs = xs.map(|row| &row[..rows.len()]);
    for (i, w) in rows.iter().enumerate() {
        for j in 0..TOKENS {
            let v = xs[j][i];
            for k in 0..OUTS {
                acc[j][k] = madd(v, w[k], acc[j][k]);
            }
        }
    }
    acc
}

/// Independent sums of a dot product, so that it compiles to vector arithmetic.
const LANES: usize = 16;

/// The dot product of two rows.
#[inline(never)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for k in 0..LANES {
            acc[k] = madd(x[k], y[k], acc[k]);
        }
    }
    acc.iter().sum::<f32>() + a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum::<f32>()
}

/// `a · b + c`, fused where the CPU has the instruction (a call into software
/// otherwise, far slower than two operations).
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

impl Norm {
    /// Layer norm of each row of `width` in `x`, in place.
    fn apply(&self, x: &mut [f32], width: usize) {
        for row in x.chunks_exact_mut(width) {
            let mean = row.iter().sum::<f32>() / width as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
            let inv = 1.0 / (var + EPS).sqrt();
            for (k, v) in row.iter_mut().enumerate() {
                *v = (*v - mean) * inv * self.gamma[k] + self.beta[k];
            }
        }
    }
}

fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::MIN, f32::max);
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    scores.iter_mut().for_each(|s| *s /= sum);
}

/// GELU with the exact error function, as BERT's `"gelu"`.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// The error function to within 5e-7 in f32, as a rational function of `x` clamped to
/// ±4 (beyond, erf is ±1 in f32): the approximation Eigen and XNNPACK use, cheap
/// enough for the 9,216 a question's layers need per token.
fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -1.609_603_3e-2,
        -2.954_6e-3,
        -7.349_906_3e-4,
        -5.692_506_4e-5,
        -2.101_024e-6,
        2.770_681_4e-8,
        -2.726_142_3e-10,
    ];
    const BETA: [f32; 5] = [
        -1.426_474e-2,
        -7.373_329e-3,
        -1.682_827e-3,
        -2.133_740_6e-4,
        -1.456_607_2e-5,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ALPHA.iter().rev().fold(0.0, |acc, &c| madd(acc, x2, c));
    let q = BETA.iter().rev().fold(0.0, |acc, &c| madd(acc, x2, c));
    (x * p / q).clamp(-1.0, 1.0)
}

/// The file's tensors by name, each taken once and converted to `f32`.
struct Tensors<'a> {
    file: &'a SafeTensors<'a>,
    names: HashMap<String, String>,
}

impl<'a> Tensors<'a> {
    /// Names are looked up with or without a `bert.` prefix (both are published).
    fn new(file: &'a SafeTensors<'a>) -> Self {
        let names = file
            .names()
            .into_iter()
            .map(|name| {
                (
                    name.trim_start_matches("bert.").to_string(),
                    name.to_string(),
                )
            })
            .collect();
        Self { file, names }
    }

    fn take(&mut self, name: &str, len: usize) -> Result<Vec<f32>, String> {
        let stored = self
            .names
            .remove(name)
            .ok_or_else(|| format!("no tensor {name}"))?;
        let view = self.file.tensor(&stored).map_err(|e| e.to_string())?;
        if view.dtype() != Dtype::F32 {
            return Err(format!("{name} is {:?}, not F32", view.dtype()));
        }
        let values: Vec<f32> = view
            .data()
            .as_chunks::<4>()
            .0
            .iter()
            .map(|b| f32::from_le_bytes(*b))
            .collect();
        if values.len() != len {
            return Err(format!("{name} holds {} values, not {len}", values.len()));
        }
        Ok(values)
    }

    fn linear(&mut self, name: &str, inputs: usize, outputs: usize) -> Result<Linear, String> {
        Ok(Linear {
            weight: self.take(&format!("{name}.weight"), inputs * outputs)?,
            bias: self.take(&format!("{name}.bias"), outputs)?,
            inputs,
        })
    }

    fn norm(&mut self, name: &str, width: usize) -> Result<Norm, String> {
        Ok(Norm {
            gamma: self.take(&format!("{name}.weight"), width)?,
            beta: self.take(&format!("{name}.bias"), width)?,
        })
    }

    fn layer(&mut self, name: &str, shape: &Shape) -> Result<Layer, String> {
        let (h, i) = (shape.hidden_size, shape.intermediate_size);
        let attention = format!("{name}.attention");
        let parts = ["query", "key", "value"]
            .map(|part| self.linear(&format!("{attention}.self.{part}"), h, h));
        let mut qkv = Linear {
            weight: Vec::with_capacity(3 * h * h),
            bias: Vec::with_capacity(3 * h),
            inputs: h,
        };
        for part in parts {
            let part = part?;
            qkv.weight.extend(part.weight);
            qkv.bias.extend(part.bias);
        }
        Ok(Layer {
            qkv: qkv.packed(),
            attention_out: self
                .linear(&format!("{attention}.output.dense"), h, h)?
                .packed(),
            attention_norm: self.norm(&format!("{attention}.output.LayerNorm"), h)?,
            up: self
                .linear(&format!("{name}.intermediate.dense"), h, i)?
                .packed(),
            down: self.linear(&format!("{name}.output.dense"), i, h)?.packed(),
            out_norm: self.norm(&format!("{name}.output.LayerNorm"), h)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_the_error_function_to_within_5e_7() {
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let exact = libm::erf(f64::from(x));
            let got = f64::from(erf(x));
            assert!((got - exact).abs() < 5e-7, "erf({x}) = {got}, not {exact}");
        }
    }

    /// Any number of tokens and outputs (tiles cut short on both sides): the plain sums.
    #[test]
    fn matrix_products_match_plain_sums() {
        let (inputs, outputs, n) = (37, 70, 6);
        let weight: Vec<f32> = (0..inputs * outputs)
            .map(|i| ((i * 13) % 11) as f32 * 0.25 - 1.0)
            .collect();
        let linear = Linear {
            weight: weight.clone(),
            bias: (0..outputs).map(|o| o as f32 * 0.01).collect(),
            inputs,
        }
        .packed();
        let x: Vec<f32> = (0..n * inputs)
            .map(|i| ((i * 7) % 5) as f32 - 2.0)
            .collect();
        let one = linear.apply(&x, n);
        for t in 0..n {
            for o in 0..outputs {
                let row = &weight[o * inputs..(o + 1) * inputs];
                let expected: f32 = row
                    .iter()
                    .zip(&x[t * inputs..(t + 1) * inputs])
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    + linear.bias[o];
                assert!((one[t * outputs + o] - expected).abs() < 1e-3, "{t} {o}");
            }
        }
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5 - 3.0).collect();
        let expected: f32 = a.iter().zip(&x).map(|(p, q)| p * q).sum();
        assert!((dot(&a, &x[..37]) - expected).abs() < 1e-3);
    }
}
