//! A small, tolerant HTML-to-text converter for the pages the Research agent reads.
//!
//! It is a scanner, not a parser: it splits the document into text, start tags and end tags,
//! drops what a reader does not want (scripts, styles, navigation, forms, comments ...), turns
//! block elements into line breaks and decodes character references. Malformed markup
//! (unclosed tags, stray `<`, quoted `>` in attributes) never makes it fail.

use std::borrow::Cow;

/// Elements whose whole content is dropped.
const SKIPPED: &str = "script style noscript template svg math head nav footer aside form iframe object \
                       select button textarea";
/// Elements whose content is raw text: the scanner looks only for their end tag.
/// The most skipped elements open at once that are tracked; deeper ones are skipped with them.
const MAX_SKIPPED_DEPTH: usize = 256;
const RAW_TEXT: &str = "script style title textarea xmp";
/// Block elements with a blank line before and after.
const PARAGRAPHS: &str = "p h1 h2 h3 h4 h5 h6 pre blockquote table ul ol dl section article main header \
                          figure hr details";
/// Block elements with a line break before and after.
const LINES: &str = "div li tr dt dd figcaption address summary caption fieldset legend center body html \
                     thead tbody tfoot";

/// Whether `name` is in the space-separated `list`.
fn one_of(list: &str, name: &str) -> bool {
    list.split_ascii_whitespace().any(|n| n == name)
}

/// The title and readable text of an HTML document.
///
/// The title is the first `<title>` (whitespace collapsed). The text comes from `<main>` when
/// the document has one, else from its `<article>`s, else from the whole body; a focus that
/// turns out empty (a page rendered by script) falls back to the next.
pub fn to_text(html: &str) -> (Option<String>, String) {
    let lower = html.to_ascii_lowercase();
    let mut title: Option<String> = None;
    let mut skipping: Vec<&str> = Vec::new();
    let (mut in_main, mut in_article, mut in_pre) = (0usize, 0usize, 0usize);
    // Whole document, inside <main>, inside <article>.
    let mut out: [TextBuf; 3] = Default::default();

    for token in Tokens::new(html, &lower) {
        match token {
            Token::Raw { name, text } => {
                if name == "title" && title.is_none() && !skipping.contains(&"svg") {
                    let text = collapse(&decode_entities(text));
                    title = (!text.is_empty()).then_some(text);
                }
            }
            Token::Start { name, self_closing } => {
                if name == "body" {
                    // A <body> ends a <head> left open.
                    if let Some(at) = skipping.iter().position(|n| *n == "head") {
                        skipping.truncate(at);
                    }
                }
                if one_of(SKIPPED, name) {
                    // A raw-text element's end tag is consumed with its content.
                    // The stack is bounded, so a page of thousands of nested skipped elements
                    // costs linear time: past the bound everything is skipped anyway.
                    if !self_closing && !one_of(RAW_TEXT, name) && skipping.len() < MAX_SKIPPED_DEPTH {
                        skipping.push(name);
                    }
                    continue;
                }
                if !skipping.is_empty() {
                    continue;
                }
                match name {
                    "main" => in_main += 1,
                    "article" => in_article += 1,
                    "pre" => in_pre += 1,
                    _ => {}
                }
                each(&mut out, in_main, in_article, |buf| buf.open(name));
            }
            Token::End { name } => {
                if let Some(at) = skipping.iter().rposition(|n| *n == name) {
                    skipping.truncate(at);
                    continue;
                }
                if !skipping.is_empty() {
                    continue;
                }
                each(&mut out, in_main, in_article, |buf| buf.close(name));
                match name {
                    "main" => in_main = in_main.saturating_sub(1),
                    "article" => in_article = in_article.saturating_sub(1),
                    "pre" => in_pre = in_pre.saturating_sub(1),
                    _ => {}
                }
            }
            Token::Text(text) => {
                if !skipping.is_empty() {
                    continue;
                }
                let text = decode_entities(text);
                each(&mut out, in_main, in_article, |buf| match in_pre {
                    0 => buf.text(&text),
                    _ => buf.pre(&text),
                });
            }
        }
    }
    let [all, main, article] = out.map(TextBuf::finish);
    let text = [main, article].into_iter().find(|t| !t.is_empty()).unwrap_or(all);
    (title, text)
}

/// Applies `f` to the outputs (whole document, main, article) the current content goes to.
fn each(out: &mut [TextBuf; 3], in_main: usize, in_article: usize, mut f: impl FnMut(&mut TextBuf)) {
    let on = [true, in_main > 0, in_article > 0];
    out.iter_mut()
        .zip(on)
        .filter(|(_, on)| *on)
        .for_each(|(buf, _)| f(buf));
}

/// One piece of the document.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    /// Character data between tags.
    Text(&'a str),
    /// A start tag; the name is lower case.
    Start { name: &'a str, self_closing: bool },
    /// An end tag; the name is lower case.
    End { name: &'a str },
    /// A raw-text element (script, style, title ...) with its content.
    Raw { name: &'a str, text: &'a str },
}

/// Splits a document into [`Token`]s. Comments, CDATA, doctypes and processing instructions
/// are skipped. `lower` is the document in ASCII lower case (same byte offsets).
struct Tokens<'a> {
    src: &'a str,
    lower: &'a str,
    pos: usize,
    /// The raw-text element whose content comes next.
    raw: Option<&'a str>,
}

impl<'a> Tokens<'a> {
    fn new(src: &'a str, lower: &'a str) -> Self {
        Tokens {
            src,
            lower,
            pos: 0,
            raw: None,
        }
    }

    /// Reads the content of the raw-text element `name` and its end tag.
    fn raw_text(&mut self, name: &'a str) -> Token<'a> {
        let start = self.pos;
        let mut from = start;
        let end = loop {
            let Some(at) = self.lower[from..].find("</").map(|i| from + i) else {
                break self.src.len();
            };
            let after = &self.lower[at + 2..];
            let ends_name = after
                .as_bytes()
                .get(name.len())
                .is_none_or(|b| b.is_ascii_whitespace() || *b == b'/' || *b == b'>');
            if after.starts_with(name) && ends_name {
                break at;
            }
            from = at + 2;
        };
        self.pos = match self.src[end..].find('>') {
            Some(i) => end + i + 1,
            None => self.src.len(),
        };
        Token::Raw {
            name,
            text: &self.src[start..end],
        }
    }

    /// Reads a tag name starting at `at`; returns it and the offset after it.
    fn name(&self, at: usize) -> (&'a str, usize) {
        let bytes = self.lower.as_bytes();
        let mut end = at;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || b"-_:".contains(&bytes[end])) {
            end += 1;
        }
        (&self.lower[at..end], end)
    }

    /// Finds the `>` closing a start tag whose attributes begin at `from`, ignoring `>` inside
    /// quoted attribute values. Returns the offset of `>` and whether the tag ends with `/>`.
    fn tag_end(&self, from: usize) -> Option<(usize, bool)> {
        let bytes = self.src.as_bytes();
        let (mut i, mut quote, mut after_eq, mut last) = (from, None, false, b' ');
        while i < bytes.len() {
            let b = bytes[i];
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'>' => return Some((i, last == b'/')),
                None if (b == b'"' || b == b'\'') && after_eq => quote = Some(b),
                None => {}
            }
            if quote.is_none() && !b.is_ascii_whitespace() {
                after_eq = b == b'=';
                last = b;
            }
            i += 1;
        }
        None
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if let Some(name) = self.raw.take() {
            return Some(self.raw_text(name));
        }
        loop {
            let rest = &self.src[self.pos..];
            if rest.is_empty() {
                return None;
            }
            let Some(lt) = rest.find('<') else {
                self.pos = self.src.len();
                return Some(Token::Text(rest));
            };
            if lt > 0 {
                self.pos += lt;
                return Some(Token::Text(&rest[..lt]));
            }
            let at = self.pos;
            let lower = &self.lower[at..];
            let next = rest.as_bytes().get(1).copied().unwrap_or(b' ');
            // Skips to just past `end`, or to the end of the document.
            let skip_past = |end: &str, from: usize| match self.src[from..].find(end) {
                Some(i) => from + i + end.len(),
                None => self.src.len(),
            };
            if lower.starts_with("<!--") {
                self.pos = if lower.starts_with("<!-->") {
                    at + 5
                } else {
                    skip_past("-->", at + 4)
                };
            } else if lower.starts_with("<![cdata[") {
                self.pos = skip_past("]]>", at + 9);
            } else if next == b'!' || next == b'?' {
                self.pos = skip_past(">", at + 2);
            } else if next == b'/' && rest.as_bytes().get(2).is_some_and(u8::is_ascii_alphabetic) {
                let (name, _) = self.name(at + 2);
                self.pos = skip_past(">", at + 2);
                return Some(Token::End { name });
            } else if next.is_ascii_alphabetic() {
                let (name, after) = self.name(at + 1);
                let Some((gt, self_closing)) = self.tag_end(after) else {
                    // A tag cut off by the end of the document is dropped.
                    self.pos = self.src.len();
                    return None;
                };
                self.pos = gt + 1;
                if one_of(RAW_TEXT, name) && !self_closing {
                    self.raw = Some(name);
                }
                return Some(Token::Start { name, self_closing });
            } else {
                // A stray `<` is text.
                self.pos = at + 1;
                return Some(Token::Text("<"));
            }
        }
    }
}

/// Text being built: whitespace collapsed, breaks between blocks.
#[derive(Default)]
struct TextBuf {
    out: String,
    /// Line breaks owed before the next text (1 = new line, 2 = blank line).
    breaks: usize,
    /// A space is owed before the next text on the same line.
    space: bool,
    /// Written before the next text (a list item's "- ").
    prefix: Option<&'static str>,
}

impl TextBuf {
    fn open(&mut self, name: &str) {
        match name {
            "br" => self.breaks = (self.breaks + 1).min(2),
            "li" => {
                self.breaks = self.breaks.max(1);
                self.prefix = Some("- ");
            }
            "td" | "th" => self.space = true,
            _ => self.block(name),
        }
    }

    fn close(&mut self, name: &str) {
        match name {
            "td" | "th" => self.space = true,
            _ => self.block(name),
        }
    }

    fn block(&mut self, name: &str) {
        if one_of(PARAGRAPHS, name) {
            self.breaks = 2;
        } else if one_of(LINES, name) {
            self.breaks = self.breaks.max(1);
        }
    }

    /// Settles what is owed before new text.
    fn start_text(&mut self) {
        if !self.out.is_empty() {
            let trailing = self.out.len() - self.out.trim_end_matches('\n').len();
            if self.breaks > 0 {
                for _ in trailing..self.breaks {
                    self.out.push('\n');
                }
            } else if self.space && trailing == 0 {
                self.out.push(' ');
            }
        }
        self.breaks = 0;
        self.space = false;
        if let Some(prefix) = self.prefix.take() {
            self.out.push_str(prefix);
        }
    }

    /// Flowing text: runs of whitespace become one space.
    fn text(&mut self, text: &str) {
        if text.starts_with(char::is_whitespace) {
            self.space = true;
        }
        for (i, word) in text.split_whitespace().enumerate() {
            if i > 0 {
                self.space = true;
            }
            self.start_text();
            self.out.push_str(word);
        }
        if text.ends_with(char::is_whitespace) {
            self.space = true;
        }
    }

    /// Preformatted text, kept as it is (a newline right after `<pre>` is dropped).
    fn pre(&mut self, text: &str) {
        let text = if self.breaks > 0 {
            text.strip_prefix('\n').unwrap_or(text)
        } else {
            text
        };
        if !text.is_empty() {
            self.start_text();
            self.out.push_str(text);
        }
    }

    fn finish(self) -> String {
        self.out.trim().to_owned()
    }
}

/// Collapses all whitespace runs to one space and trims.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes character references: the common named ones and numeric (decimal and hex). An
/// unknown or malformed reference is left as written.
fn decode_entities(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let reference = &rest[1..];
        let len = reference
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .unwrap_or(reference.len());
        let name = &reference[..len];
        let decoded = if let Some(num) = name.strip_prefix('#') {
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse().ok(),
            };
            code.map(|c| char::from_u32(c).filter(|c| *c != '\0').unwrap_or('\u{fffd}'))
        } else {
            named_entity(name)
        };
        match decoded {
            Some(c) if !name.is_empty() => {
                if c != '\u{ad}' {
                    out.push(c);
                }
                let used = 1 + len + usize::from(reference[len..].starts_with(';'));
                rest = &rest[used..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "shy" => '\u{ad}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "middot" => '·',
        "bull" => '•',
        "deg" => '°',
        "times" => '×',
        "divide" => '÷',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "para" => '¶',
        "larr" => '←',
        "rarr" => '→',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_of_nested_skipped_elements_are_skipped_whole() {
        let page = format!(
            "{}hidden{}<p>after</p>",
            "<nav>".repeat(20_000),
            "</b>".repeat(20_000)
        );
        let (_, text) = to_text(&page);
        assert_eq!(text, "", "still inside the navigation");
        let page = format!(
            "<p>before</p>{}x{}<p>after</p>",
            "<aside>".repeat(300),
            "</aside>".repeat(300)
        );
        let (_, text) = to_text(&page);
        assert!(text.starts_with("before") && !text.contains('x'), "{text}");
    }

    fn text(html: &str) -> String {
        to_text(html).1
    }

    #[test]
    fn a_realistic_page_reads_as_its_main_content() {
        let page = r#"<!DOCTYPE html>
<html lang="en"><head>
  <meta charset="utf-8"><title>
    Rust  &amp; Kubernetes </title>
  <style>body { color: red; }</style>
  <script>var x = "<p>not text</p>"; if (a < b) {}</script>
</head>
<body>
  <nav><ul><li><a href="/">Home</a></li><li>About</li></ul></nav>
  <header><h1>Site name</h1></header>
  <main>
    <h1>Operators   in Rust</h1>
    <p>An <em>operator</em> watches
       resources.</p>
    <ul><li>kube-rs</li><li>controller-runtime</li></ul>
    <noscript>Enable JavaScript</noscript>
    <form><input name="q"><button>Search</button></form>
  </main>
  <aside>Related posts</aside>
  <footer>© 2025</footer>
  <script src="/app.js"></script>
</body></html>"#;
        let (title, text) = to_text(page);
        assert_eq!(title.as_deref(), Some("Rust & Kubernetes"));
        assert_eq!(
            text,
            "Operators in Rust\n\nAn operator watches resources.\n\n- kube-rs\n- controller-runtime"
        );
    }

    #[test]
    fn without_main_the_articles_are_taken_and_without_them_the_body() {
        let html = "<div>Menu</div><article><p>First</p></article><div>Ad</div><article>Second</article>";
        assert_eq!(text(html), "First\n\nSecond");
        assert_eq!(text("<div>One</div><div>Two</div>"), "One\nTwo");
        // An empty <main> (filled by script) falls back to the whole body.
        assert_eq!(text("<main></main><p>Static text</p>"), "Static text");
        // An <article> inside a skipped element does not count.
        assert_eq!(
            text("<p>Body</p><aside><article>Teaser</article></aside>"),
            "Body"
        );
    }

    #[test]
    fn blocks_become_lines_with_at_most_one_blank_line() {
        let html = "<h2>Title</h2>\n\n<p>One</p><p></p><p></p><p>Two<br>three</p>\
                    <div>a</div><div>b</div><table><tr><td>x</td><td>y</td></tr><tr><td>z</td></tr></table>";
        assert_eq!(text(html), "Title\n\nOne\n\nTwo\nthree\n\na\nb\n\nx y\nz");
        assert_eq!(text("a<br><br><br><br>b"), "a\n\nb");
        assert_eq!(text("<span>in</span><b>line</b> <i>words</i>"), "inline words");
    }

    #[test]
    fn entities_are_decoded() {
        assert_eq!(
            text("<p>&lt;a&gt; &amp;&amp; &quot;q&quot; &apos;s&apos; &#65;&#x42;&#X43;</p>"),
            "<a> && \"q\" 's' ABC"
        );
        assert_eq!(text("caf&eacute &copy;&mdash;ok &hellip;"), "caf&eacute ©—ok …");
        assert_eq!(
            text("a&nbsp;&nbsp;b &#0; &#xFFFFFF; &; & x &amp"),
            "a b \u{fffd} \u{fffd} &; & x &"
        );
        assert_eq!(text("soft&shy;hyphen"), "softhyphen");
    }

    #[test]
    fn pre_keeps_its_whitespace() {
        let html = "<p>Run:</p><pre>\nfn main() {\n    println!(\"&lt;hi&gt;\");\n}\n</pre><p>Done   now</p>";
        assert_eq!(
            text(html),
            "Run:\n\nfn main() {\n    println!(\"<hi>\");\n}\n\nDone now"
        );
    }

    #[test]
    fn comments_cdata_and_other_markup_are_dropped() {
        let html = "<!-- a <p>comment</p> --><p>A<!---->B</p><![CDATA[x < y]]><?php echo 1 ?><p>C</p>";
        assert_eq!(text(html), "AB\n\nC");
        assert_eq!(
            text("<svg><title>icon</title><text>1</text></svg><title>Real</title>"),
            ""
        );
        assert_eq!(
            to_text("<svg><title>icon</title></svg><title>Real</title>")
                .0
                .as_deref(),
            Some("Real")
        );
        assert_eq!(to_text("<title> </title>x").0, None);
    }

    #[test]
    fn malformed_input_never_panics_and_reads_sensibly() {
        assert_eq!(text("a < b and c<3 <> d"), "a < b and c<3 <> d");
        assert_eq!(
            text(r#"<a title="x > y" href='/q?a>b'>link</a> <img alt=it's>end"#),
            "link end"
        );
        assert_eq!(text("<p>unclosed <b>bold <i>both"), "unclosed bold both");
        assert_eq!(text("<p>cut off <a href=\"x"), "cut off");
        assert_eq!(text("<script>never closed <p>x</p>"), "");
        assert_eq!(text("<nav>open nav"), "");
        assert_eq!(
            text("<head><title>T</title><body><p>no head end</p>"),
            "no head end"
        );
        assert_eq!(text("</p></div>stray ends</li>"), "stray ends");
        assert_eq!(text("<SCRIPT>x</sCrIpT><P>Upper</P>"), "Upper");
        assert_eq!(text("<script>a</scripts>b</script>c"), "c");
        for junk in [
            "<",
            "<!",
            "<!--",
            "<![CDATA[",
            "</",
            "&",
            "&#",
            "&#x",
            "<a",
            "<a b='",
            "é<é>&é;",
            "<pre>",
        ] {
            let _ = to_text(junk);
        }
    }
}
