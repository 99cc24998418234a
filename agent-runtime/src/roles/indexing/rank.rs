//! Ranking: the words of code and text (identifiers split at `_` and case changes), BM25 over
//! them, the top `k` of a stream of scores, and reciprocal rank fusion of two rankings.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BinaryHeap, HashMap},
};

use crate::store::Posting;

/// BM25's term frequency saturation.
pub const K1: f64 = 1.2;
/// BM25's length normalisation.
pub const B: f64 = 0.75;
/// Reciprocal rank fusion's damping constant.
pub const RRF_K: f64 = 60.0;
/// The longest word kept (longer ones are mostly data).
const MAX_WORD: usize = 64;

/// The words of `text` with their counts, and the total: every identifier lowercased, and
/// also its parts (`parseHeaderValue` and `parse_header_value` give `parse`, `header`,
/// `value`).
pub fn words(text: &str) -> (BTreeMap<String, u32>, u32) {
    let mut counts = BTreeMap::new();
    let mut total = 0;
    for_each_word(text, |w| {
        *counts.entry(w).or_insert(0) += 1;
        total += 1;
    });
    (counts, total)
}

/// The distinct words of a query.
pub fn query_words(text: &str) -> Vec<String> {
    let (counts, _) = words(text);
    counts.into_keys().collect()
}

fn for_each_word(text: &str, mut emit: impl FnMut(String)) {
    for token in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        let token = token.trim_matches('_');
        if token.is_empty() || token.chars().count() > MAX_WORD {
            continue;
        }
        let whole = token.to_lowercase();
        let parts = split_identifier(token);
        if whole.chars().count() >= 2 || !whole.is_ascii() {
            emit(whole.clone());
        }
        if parts.len() > 1 {
            for p in parts {
                if p.chars().count() >= 2 && p != whole {
                    emit(p);
                }
            }
        }
    }
}

/// The parts of an identifier, lowercased: split at `_`, at a lower-to-upper change and
/// before the last capital of a run followed by a lower-case letter (`HTTPServer` gives
/// `http`, `server`), and between letters and digits.
pub fn split_identifier(token: &str) -> Vec<String> {
    let mut parts = vec![];
    for piece in token.split('_').filter(|p| !p.is_empty()) {
        let chars: Vec<char> = piece.chars().collect();
        let mut start = 0;
        for i in 1..chars.len() {
            let (a, b) = (chars[i - 1], chars[i]);
            let next_lower = chars.get(i + 1).is_some_and(|c| c.is_lowercase());
            let boundary = (a.is_lowercase() && b.is_uppercase())
                || (a.is_uppercase() && b.is_uppercase() && next_lower)
                || (a.is_alphabetic() && b.is_ascii_digit())
                || (a.is_ascii_digit() && b.is_alphabetic());
            if boundary {
                parts.push(chars[start..i].iter().collect::<String>().to_lowercase());
                start = i;
            }
        }
        parts.push(chars[start..].iter().collect::<String>().to_lowercase());
    }
    parts
}

/// BM25 scores of the chunks in `postings`, for a collection of `n` chunks of average length
/// `avg_len`.
pub fn bm25(postings: &[Posting], n: u64, avg_len: f64) -> HashMap<i64, f64> {
    let mut df: HashMap<&str, u64> = HashMap::new();
    for p in postings {
        *df.entry(p.term.as_str()).or_insert(0) += 1;
    }
    let n = n as f64;
    let avg = if avg_len > 0.0 { avg_len } else { 1.0 };
    let mut scores = HashMap::new();
    for p in postings {
        let d = df[p.term.as_str()] as f64;
        let idf = (1.0 + (n - d + 0.5) / (d + 0.5)).ln();
        let tf = f64::from(p.tf);
        let norm = K1 * (1.0 - B + B * f64::from(p.length) / avg);
        *scores.entry(p.chunk).or_insert(0.0) += idf * tf * (K1 + 1.0) / (tf + norm);
    }
    scores
}

/// Reciprocal rank fusion of rankings (each best first): 1/(60 + rank) summed, best first.
pub fn fuse(rankings: &[Vec<i64>], k: usize) -> Vec<(i64, f64)> {
    let mut scores: HashMap<i64, f64> = HashMap::new();
    for ranking in rankings {
        for (rank, id) in ranking.iter().enumerate() {
            *scores.entry(*id).or_insert(0.0) += 1.0 / (RRF_K + rank as f64 + 1.0);
        }
    }
    let mut top = TopK::new(k);
    for (id, s) in scores {
        top.push(id, s);
    }
    top.into_sorted()
}

#[derive(PartialEq)]
struct Entry(f64, i64);
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// The worse entry is the greater, so the heap's top is the one to drop: a lower score, or
    /// at the same score a higher id.
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

/// The `k` best of a stream of (id, score), in bounded memory.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl TopK {
    /// Keeps the best `k`.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Offers one.
    pub fn push(&mut self, id: i64, score: f64) {
        if self.k == 0 || score.is_nan() {
            return;
        }
        self.heap.push(Entry(score, id));
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// The best first (ties by lower id).
    pub fn into_sorted(self) -> Vec<(i64, f64)> {
        let mut v: Vec<(i64, f64)> = self.heap.into_iter().map(|Entry(s, id)| (id, s)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_split_into_their_words() {
        assert_eq!(split_identifier("parseHeaderValue"), ["parse", "header", "value"]);
        assert_eq!(
            split_identifier("parse_header_value"),
            ["parse", "header", "value"]
        );
        assert_eq!(split_identifier("HTTPServer"), ["http", "server"]);
        assert_eq!(split_identifier("utf8Decode"), ["utf", "8", "decode"]);
        let (w, total) = words("fn parseHeaderValue(x) -> Result");
        assert!(w.contains_key("parseheadervalue") && w.contains_key("header") && w.contains_key("result"));
        assert!(!w.contains_key("x"), "one-letter words are noise");
        assert_eq!(total, w.values().sum::<u32>());
        assert_eq!(query_words("서울 날씨"), ["날씨", "서울"]);
    }

    #[test]
    fn bm25_prefers_rare_words_and_short_chunks() {
        let p = |term: &str, chunk, tf, length| Posting {
            term: term.into(),
            chunk,
            tf,
            length,
        };
        // "common" is in every chunk, "rare" in one: the rare word decides.
        let postings = vec![
            p("common", 1, 3, 10),
            p("common", 2, 3, 10),
            p("common", 3, 3, 10),
            p("rare", 2, 1, 10),
        ];
        let s = bm25(&postings, 3, 10.0);
        assert!(s[&2] > s[&1] && (s[&1] - s[&3]).abs() < 1e-12);
        // The same count in a shorter chunk scores higher.
        let s = bm25(&[p("w", 1, 2, 5), p("w", 2, 2, 50)], 10, 20.0);
        assert!(s[&1] > s[&2]);
    }

    #[test]
    fn top_k_keeps_the_best_and_fusion_rewards_agreement() {
        let mut t = TopK::new(2);
        for (id, s) in [(1, 0.5), (2, 0.9), (3, 0.1), (4, 0.9)] {
            t.push(id, s);
        }
        assert_eq!(t.into_sorted(), vec![(2, 0.9), (4, 0.9)]);
        let fused = fuse(&[vec![1, 2, 3], vec![2, 9, 3]], 2);
        let ids: Vec<i64> = fused.iter().map(|f| f.0).collect();
        assert_eq!(ids, [2, 3], "found by both beats first in one: {fused:?}");
    }
}
