//! Markdown (CommonMark with tables and heading attributes) through `pulldown-cmark`.
//! Headings become the heading path; an explicit `{#id}` is the anchor, else a
//! GitHub-style anchor of the heading text. Code blocks keep their line breaks; raw
//! HTML and front matter are dropped.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::extract::{Extracted, SectionBuilder, heading_anchor};

/// Reads one Markdown document.
pub fn extract(source: &str) -> Extracted {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_HEADING_ATTRIBUTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;
    let mut builder = SectionBuilder::default();
    let mut text = String::new();
    let mut heading: Option<(u8, Option<String>)> = None;
    let mut in_code = false;
    let mut in_metadata = false;

    for event in Parser::new_ext(source, options) {
        match event {
            Event::Start(Tag::Heading { level, id, .. }) => {
                builder.paragraph(&std::mem::take(&mut text));
                heading = Some((level_number(level), id.map(|id| id.to_string())));
            }
            Event::End(TagEnd::Heading(_)) => {
                let heading_text = std::mem::take(&mut text);
                if let Some((level, id)) = heading.take() {
                    let anchor = id.or_else(|| Some(heading_anchor(&heading_text)));
                    builder.heading(level, &heading_text, anchor.filter(|a| !a.is_empty()));
                }
            }
            Event::Start(Tag::CodeBlock(_)) => {
                builder.paragraph(&std::mem::take(&mut text));
                in_code = true;
            }
            Event::End(TagEnd::CodeBlock) => {
                builder.preformatted(&std::mem::take(&mut text));
                in_code = false;
            }
            Event::Start(Tag::MetadataBlock(_)) => in_metadata = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_metadata = false,
            Event::Start(Tag::Item) => builder.paragraph(&std::mem::take(&mut text)),
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::TableRow
                | TagEnd::TableHead
                | TagEnd::BlockQuote(_),
            ) => builder.paragraph(&std::mem::take(&mut text)),
            Event::End(TagEnd::TableCell) => text.push_str(" | "),
            Event::Text(t) | Event::Code(t) if !in_metadata => text.push_str(&t),
            Event::SoftBreak | Event::HardBreak => text.push(if in_code { '\n' } else { ' ' }),
            _ => {}
        }
    }
    builder.paragraph(&text);
    let title = builder.first_heading().map(str::to_string);
    Extracted {
        title,
        sections: builder.finish(),
    }
}

fn level_number(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_become_the_heading_path() {
        let doc = extract(
            "---\ntitle: ignored\n---\n# Guide\n\nIntro *text*.\n\n## Install {#setup}\n\n\
             - one\n- two\n\n```sh\ncargo build\ncargo test\n```\n\n### On Linux\n\nUse `apt`.\n",
        );
        assert_eq!(doc.title.as_deref(), Some("Guide"));
        let s = &doc.sections;
        assert_eq!(s[0].heading_path, ["Guide"]);
        assert_eq!(s[0].paragraphs, ["Intro text."]);
        assert_eq!(s[1].heading_path, ["Guide", "Install"]);
        assert_eq!(s[1].anchor.as_deref(), Some("setup"));
        assert_eq!(s[1].paragraphs, ["one", "two", "cargo build\ncargo test"]);
        assert_eq!(s[2].heading_path, ["Guide", "Install", "On Linux"]);
        assert_eq!(s[2].anchor.as_deref(), Some("on-linux"));
        assert_eq!(s[2].paragraphs, ["Use apt."]);
    }

    #[test]
    fn tables_keep_their_cells() {
        let doc = extract("| flag | default |\n|---|---|\n| `--port` | 8080 |\n");
        assert_eq!(
            doc.sections[0].paragraphs,
            ["flag | default |", "--port | 8080 |"]
        );
    }
}
