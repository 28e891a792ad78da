//! HTML through `scraper` (html5ever, the same parser as a browser's): the `<title>`
//! is the title, `h1`–`h6` are headings, block elements are paragraphs, `<pre>` keeps
//! its line breaks. Scripts, styles, forms and navigation are dropped: the `nav`,
//! `aside`, `footer` elements, `role="navigation"`, `aria-hidden="true"`, and the
//! classes that documentation generators use for sidebars, link bars and heading
//! permalinks (Sphinx's `sphinxsidebar`, `related`, `headerlink`, ...).
//!
//! A heading's anchor is its permalink (`<a class="headerlink" href="#x">`), else its
//! own `id`, else the `id` of the element that wraps it (Sphinx's `<section id>`).

use ego_tree::NodeRef;
use scraper::node::Element;
use scraper::{ElementRef, Html, Node, Selector};

use crate::extract::{Extracted, SectionBuilder, collapse_whitespace};

/// Elements whose content is never text of the document.
const DROPPED_ELEMENTS: &[&str] = &[
    "script", "style", "noscript", "template", "head", "nav", "aside", "footer", "svg", "iframe",
    "form", "button", "select", "textarea", "object", "canvas",
];

/// Classes of navigation and chrome in generated documentation.
const DROPPED_CLASSES: &[&str] = &[
    "sphinxsidebar",
    "sphinxsidebarwrapper",
    "related",
    "headerlink",
    "footer",
    "navigation",
    "sidebar",
    "breadcrumbs",
    "skip-link",
];

/// Elements that end a paragraph before and after them.
const BLOCK_ELEMENTS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "blockquote",
    "figure",
    "figcaption",
    "header",
    "details",
    "summary",
    "hr",
    "body",
];

/// Deeper nesting than this is read as flat text rather than walked.
const MAX_DEPTH: usize = 256;

/// Reads one HTML document.
pub fn extract(source: &str) -> Extracted {
    let html = Html::parse_document(source);
    let title_selector = Selector::parse("title").expect("a valid selector");
    let title = html
        .select(&title_selector)
        .next()
        .map(|t| collapse_whitespace(&t.text().collect::<String>()))
        .filter(|t| !t.is_empty());

    let mut walker = Walker::default();
    walker.walk(*html.root_element(), 0);
    walker.flush();
    let title = title.or_else(|| walker.builder.first_heading().map(str::to_string));
    Extracted {
        title,
        sections: walker.builder.finish(),
    }
}

#[derive(Default)]
struct Walker {
    builder: SectionBuilder,
    text: String,
}

impl Walker {
    fn flush(&mut self) {
        self.builder.paragraph(&std::mem::take(&mut self.text));
    }

    fn walk(&mut self, node: NodeRef<'_, Node>, depth: usize) {
        for child in node.children() {
            match child.value() {
                Node::Text(text) => self.text.push_str(text),
                Node::Element(element) => self.element(child, element, depth),
                _ => {}
            }
        }
    }

    fn element(&mut self, node: NodeRef<'_, Node>, element: &Element, depth: usize) {
        if is_dropped(element) {
            return;
        }
        let name = element.name();
        if let Some(level) = heading_level(name) {
            self.flush();
            let mut heading = String::new();
            visible_text(node, &mut heading);
            self.builder
                .heading(level, &heading, heading_anchor(node, element));
        } else if name == "pre" {
            self.flush();
            let mut code = String::new();
            visible_text(node, &mut code);
            self.builder.preformatted(&code);
        } else if name == "br" {
            self.text.push(' ');
        } else if depth >= MAX_DEPTH {
            visible_text(node, &mut self.text);
        } else if BLOCK_ELEMENTS.contains(&name) || name == "td" || name == "th" {
            if name == "td" || name == "th" {
                self.text.push_str(" | ");
            } else {
                self.flush();
            }
            self.walk(node, depth + 1);
            if name != "td" && name != "th" {
                self.flush();
            }
        } else {
            self.walk(node, depth + 1);
        }
    }
}

fn is_dropped(element: &Element) -> bool {
    DROPPED_ELEMENTS.contains(&element.name())
        || element
            .classes()
            .any(|class| DROPPED_CLASSES.contains(&class))
        || element.attr("role") == Some("navigation")
        || element.attr("aria-hidden") == Some("true")
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

fn heading_anchor(node: NodeRef<'_, Node>, element: &Element) -> Option<String> {
    let permalink = ElementRef::wrap(node).and_then(|heading| {
        heading.descendants().find_map(|d| {
            let link = d.value().as_element()?;
            let is_permalink = link.name() == "a" && link.classes().any(|c| c == "headerlink");
            link.attr("href")
                .filter(|_| is_permalink)?
                .strip_prefix('#')
                .map(str::to_string)
        })
    });
    permalink
        .or_else(|| element.attr("id").map(str::to_string))
        .or_else(|| {
            node.parent()?
                .value()
                .as_element()?
                .attr("id")
                .map(str::to_string)
        })
        .filter(|anchor| !anchor.is_empty())
}

/// Appends the text under `node`, leaving out what [`is_dropped`] drops.
/// The text under `node`, dropped elements' subtrees left out, in one pass over it (a
/// dropped element's subtree is skipped as a whole, so no node looks at its ancestors:
/// linear however deep the nesting).
fn visible_text(node: NodeRef<'_, Node>, out: &mut String) {
    let mut stack: Vec<NodeRef<'_, Node>> = node.children().rev().collect();
    while let Some(child) = stack.pop() {
        match child.value() {
            Node::Text(text) => out.push_str(text),
            Node::Element(element) if element.name() == "br" => out.push('\n'),
            Node::Element(element) if is_dropped(element) => continue,
            _ => {}
        }
        stack.extend(child.children().rev());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r##"<!doctype html><html><head><title>json — JSON encoder</title>
        <script>var secret = "do not index";</script><style>p { color: red }</style></head>
        <body><nav><a href="/">Home</a> | <a href="/x">Next page</a></nav>
        <div class="sphinxsidebar">Quick search</div>
        <section id="module-json"><h1>json — JSON encoder<a class="headerlink" href="#module-json">¶</a></h1>
        <p>JSON is a <b>lightweight</b> data
           interchange format.</p>
        <section id="basic-usage"><h2>Basic Usage</h2>
        <pre>import json
json.dumps([1, 2])</pre>
        <ul><li>one</li><li>two</li></ul>
        <script>document.write("tracking")</script>
        <table><tr><td>indent</td><td>None</td></tr></table>
        </section></section></body></html>"##;

    #[test]
    fn keeps_title_and_headings_and_drops_scripts_and_navigation() {
        let doc = extract(PAGE);
        assert_eq!(doc.title.as_deref(), Some("json — JSON encoder"));
        let first = &doc.sections[0];
        assert_eq!(first.heading_path, ["json — JSON encoder"]);
        assert_eq!(first.anchor.as_deref(), Some("module-json"));
        assert_eq!(
            first.paragraphs,
            ["JSON is a lightweight data interchange format."]
        );
        let second = &doc.sections[1];
        assert_eq!(second.heading_path, ["json — JSON encoder", "Basic Usage"]);
        assert_eq!(second.anchor.as_deref(), Some("basic-usage"));
        assert_eq!(
            second.paragraphs,
            [
                "import json\njson.dumps([1, 2])",
                "one",
                "two",
                "| indent | None"
            ]
        );
        let all = format!("{doc:?}");
        for dropped in [
            "do not index",
            "color: red",
            "tracking",
            "Home",
            "Next page",
            "Quick search",
            "¶",
        ] {
            assert!(!all.contains(dropped), "{dropped:?} leaked into {all}");
        }
    }
}
