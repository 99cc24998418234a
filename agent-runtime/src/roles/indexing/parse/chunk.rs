//! The *chunk* step: a file's lines cut into [`Chunk`]s along definition boundaries.
//!
//! Top-level nodes become units (a definition, or the comments and attributes right above one,
//! or code between definitions); big class-like definitions are cut into their header and
//! members. Units are then made disjoint, grouped, and emitted within [`MAX_CHUNK_LINES`] and
//! [`MAX_CHUNK_BYTES`].

use tree_sitter::Node;

use super::{
    Chunk, MAX_CHUNK_BYTES, MAX_CHUNK_LINES, SymbolKind,
    extract::{Def, last_row},
};

/// Node kinds that belong to the definition right below them.
const LEADING_KINDS: &[&str] = &[
    "comment",
    "line_comment",
    "block_comment",
    "attribute_item",
    "decorator",
];

/// Line offsets of a source.
pub(super) struct Lines<'s> {
    src: &'s str,
    starts: Vec<usize>,
}

impl<'s> Lines<'s> {
    /// The line offsets of `src`.
    pub(super) fn new(src: &'s str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Lines { src, starts }
    }

    /// How many lines (a final newline starts an empty last line).
    fn count(&self) -> usize {
        self.starts.len()
    }

    /// The text of a 0-based row, without its line ending.
    fn line(&self, row: usize) -> &'s str {
        let start = self.starts[row];
        let end = self.starts.get(row + 1).map_or(self.src.len(), |next| next - 1);
        let line = &self.src[start..end];
        line.strip_suffix('\r').unwrap_or(line)
    }

    /// Whether a 0-based row holds only whitespace.
    fn is_blank(&self, row: usize) -> bool {
        self.line(row).trim().is_empty()
    }

    /// The text of rows `first..=last`, without the final line ending.
    fn span(&self, first: usize, last: usize) -> &'s str {
        let start = self.starts[first];
        let end = self.starts[last] + self.line(last).len();
        &self.src[start..end]
    }

    /// The length of [`Lines::span`] in bytes.
    fn bytes(&self, first: usize, last: usize) -> usize {
        self.span(first, last).len()
    }
}

/// The symbol and kind a chunk belongs to.
type Label = Option<(String, Option<SymbolKind>)>;

/// A span of rows before grouping and splitting.
struct Unit {
    start: usize,
    end: usize,
    label: Label,
    /// A definition that stays its own chunk (not grouped with its neighbours).
    standalone: bool,
    /// A comment or attribute that joins a definition right below it.
    leading: bool,
}

/// Cuts one file into chunks, given its lines and resolved definitions.
pub(super) struct Chunker<'a, 't> {
    lines: &'a Lines<'a>,
    defs: &'a [Def<'t>],
    children: Vec<Vec<usize>>,
    top: Vec<usize>,
}

impl<'a, 't> Chunker<'a, 't> {
    /// A chunker over `lines` and the resolved `defs` (sorted, with containers).
    pub(super) fn new(lines: &'a Lines<'a>, defs: &'a [Def<'t>]) -> Self {
        let mut children = vec![Vec::new(); defs.len()];
        let mut top = Vec::new();
        for (i, def) in defs.iter().enumerate() {
            match def.container {
                Some(c) => children[c].push(i),
                None => top.push(i),
            }
        }
        Chunker {
            lines,
            defs,
            children,
            top,
        }
    }

    /// The chunks of the file whose syntax tree is `root`, in order.
    pub(super) fn chunks(&self, root: Node<'t>) -> Vec<Chunk> {
        let mut units = Vec::new();
        let nodes: Vec<Node> = root.children(&mut root.walk()).collect();
        self.collect(&nodes, &self.top, &None, &mut units);
        let groups = self.group(self.normalize(units));
        let mut chunks = Vec::new();
        let mut covered = 0;
        let count = groups.len();
        for (i, group) in groups.into_iter().enumerate() {
            // Contiguous spans: anything between units (blank lines, stray text) joins the next.
            let end = if i + 1 == count {
                self.lines.count() - 1
            } else {
                group.end
            };
            self.emit(covered, end, &group.label, &mut chunks);
            covered = end + 1;
        }
        chunks
    }

    /// Whether `node` is over [`MAX_CHUNK_LINES`] or [`MAX_CHUNK_BYTES`].
    fn too_big(&self, node: Node) -> bool {
        let rows = last_row(node) - node.start_position().row + 1;
        rows > MAX_CHUNK_LINES as usize || node.byte_range().len() > MAX_CHUNK_BYTES
    }

    /// Units for `nodes`, given the definitions (indices, in order) that start among them.
    fn collect(&self, nodes: &[Node<'t>], here: &[usize], parent: &Label, out: &mut Vec<Unit>) {
        let mut i = 0;
        for &node in nodes {
            while i < here.len() && self.defs[here[i]].start() < node.start_byte() {
                i += 1;
            }
            let mut j = i;
            while j < here.len() && self.defs[here[j]].start() < node.end_byte() {
                j += 1;
            }
            let inner = &here[i..j];
            i = j;
            let (start, end) = (node.start_position().row, last_row(node));
            match inner {
                [] => push(
                    out,
                    Unit {
                        start,
                        end,
                        label: parent.clone(),
                        standalone: false,
                        leading: LEADING_KINDS.contains(&node.kind()),
                    },
                ),
                [d] => {
                    let def = &self.defs[*d];
                    let covers = def.start_row <= start + 2 && def.end_row + 2 >= end;
                    if self.too_big(node) && !covers && node.child_count() > 0 {
                        let kids: Vec<Node> = node.children(&mut node.walk()).collect();
                        self.collect(&kids, inner, parent, out);
                    } else if self.too_big(node) && def.is_class_like() && !self.children[*d].is_empty() {
                        self.split(node, *d, out);
                    } else {
                        let small_value = matches!(def.kind, Some(SymbolKind::Constant | SymbolKind::Type))
                            && end - start < 3;
                        // A small constant inside a cut class is part of the class's chunks.
                        let label = match parent {
                            Some(_) if small_value => parent.clone(),
                            _ => Some((def.name.clone(), def.kind)),
                        };
                        push(
                            out,
                            Unit {
                                start,
                                end,
                                label,
                                standalone: !small_value,
                                leading: false,
                            },
                        );
                    }
                }
                _ if self.too_big(node) && node.child_count() > 0 => {
                    let kids: Vec<Node> = node.children(&mut node.walk()).collect();
                    self.collect(&kids, inner, parent, out);
                }
                _ => push(
                    out,
                    Unit {
                        start,
                        end,
                        label: parent.clone(),
                        standalone: false,
                        leading: false,
                    },
                ),
            }
        }
    }

    /// A big class-like definition: its header, then its members, each method on its own.
    fn split(&self, node: Node<'t>, d: usize, out: &mut Vec<Unit>) {
        let def = &self.defs[d];
        let label = Some((def.name.clone(), def.kind));
        let (start, end) = (node.start_position().row, last_row(node));
        let Some(body) = def.node.child_by_field_name("body") else {
            push(
                out,
                Unit {
                    start,
                    end,
                    label,
                    standalone: true,
                    leading: false,
                },
            );
            return;
        };
        let body_start = body.start_position().row;
        let header_end = if body_start > start { body_start - 1 } else { start };
        push(
            out,
            Unit {
                start,
                end: header_end,
                label: label.clone(),
                standalone: false,
                leading: false,
            },
        );
        let kids: Vec<Node> = body.children(&mut body.walk()).collect();
        self.collect(&kids, &self.children[d], &label, out);
        let body_end = last_row(body);
        if end > body_end {
            push(
                out,
                Unit {
                    start: body_end + 1,
                    end,
                    label,
                    standalone: false,
                    leading: false,
                },
            );
        }
    }

    /// Makes units disjoint (a unit that starts on a line already taken starts after it) and
    /// folds lines of closing punctuation into the unit before them.
    fn normalize(&self, units: Vec<Unit>) -> Vec<Unit> {
        let mut out: Vec<Unit> = Vec::with_capacity(units.len());
        for mut unit in units {
            if let Some(prev) = out.last_mut() {
                unit.start = unit.start.max(prev.end + 1);
                if unit.start > unit.end {
                    continue;
                }
                let closing = self
                    .lines
                    .span(unit.start, unit.end)
                    .chars()
                    .all(|c| c.is_whitespace() || matches!(c, '}' | ')' | ']' | ';' | ','));
                if closing {
                    prev.end = unit.end;
                    continue;
                }
            }
            out.push(unit);
        }
        out
    }

    /// Merges runs of neighbouring units that are not standalone, within the size limits.
    fn group(&self, units: Vec<Unit>) -> Vec<Unit> {
        let mut out: Vec<Unit> = Vec::with_capacity(units.len());
        for unit in units {
            if let Some(prev) = out.last_mut() {
                let fits = unit.end - prev.start < MAX_CHUNK_LINES as usize
                    && self.lines.bytes(prev.start, unit.end) <= MAX_CHUNK_BYTES;
                if !unit.standalone && !prev.standalone && fits {
                    // Comments take the label of what they are grouped with.
                    if prev.leading {
                        prev.label = unit.label.clone();
                    } else if !unit.leading && prev.label != unit.label {
                        prev.label = None;
                    }
                    prev.end = unit.end;
                    prev.leading &= unit.leading;
                    continue;
                }
            }
            out.push(unit);
        }
        out
    }

    /// Emits rows `first..=last` as one or more chunks within the limits, without blank edges.
    fn emit(&self, first: usize, last: usize, label: &Label, out: &mut Vec<Chunk>) {
        let (symbol, kind) = match label {
            Some((name, kind)) => (Some(name.clone()), *kind),
            None => (None, None),
        };
        let mut piece: Option<(usize, usize)> = None;
        let flush = |piece: &mut Option<(usize, usize)>, out: &mut Vec<Chunk>| {
            let Some((mut a, mut b)) = piece.take() else {
                return;
            };
            while a <= b && self.lines.is_blank(a) {
                a += 1;
            }
            while b > a && self.lines.is_blank(b) {
                b -= 1;
            }
            if a <= b && !self.lines.is_blank(a) {
                out.push(Chunk {
                    start_line: a as u32 + 1,
                    end_line: b as u32 + 1,
                    symbol: symbol.clone(),
                    kind,
                    text: self.lines.span(a, b).to_string(),
                });
            }
        };
        for row in first..=last {
            let line = self.lines.line(row);
            if line.len() > MAX_CHUNK_BYTES {
                flush(&mut piece, out);
                for part in split_long_line(line) {
                    if !part.trim().is_empty() {
                        out.push(Chunk {
                            start_line: row as u32 + 1,
                            end_line: row as u32 + 1,
                            symbol: symbol.clone(),
                            kind,
                            text: part.to_string(),
                        });
                    }
                }
                continue;
            }
            piece = match piece {
                Some((a, _))
                    if row - a >= MAX_CHUNK_LINES as usize || self.lines.bytes(a, row) > MAX_CHUNK_BYTES =>
                {
                    flush(&mut piece, out);
                    Some((row, row))
                }
                Some((a, _)) => Some((a, row)),
                None if line.trim().is_empty() => None,
                None => Some((row, row)),
            };
        }
        flush(&mut piece, out);
    }
}

/// Adds a unit; a standalone one takes the comments and attributes right above it.
fn push(out: &mut Vec<Unit>, mut unit: Unit) {
    if unit.standalone {
        while let Some(prev) = out.last() {
            if !(prev.leading && prev.end < unit.start && prev.end + 1 >= unit.start) {
                break;
            }
            unit.start = prev.start;
            out.pop();
        }
    }
    out.push(unit);
}

/// Pieces of at most [`MAX_CHUNK_BYTES`] bytes, cut at character boundaries.
fn split_long_line(line: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_CHUNK_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    parts
}
