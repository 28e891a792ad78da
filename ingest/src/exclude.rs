//! What a folder walk leaves out: dot folders and files, the generated folders of
//! common tools (Sphinx's `_sources` and `_static` copies, `node_modules`), unless
//! asked not to, and every `--exclude` glob.
//!
//! A glob without `/` is matched against each file and folder name (as in a
//! `.gitignore`: `_build`, `*.rst.txt`); one with `/` against the path inside the
//! walked folder (`drafts/**`, `**/old/*.md`).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Folder names left out unless `--no-default-excludes` is given.
pub const DEFAULT_EXCLUDED_FOLDERS: &[&str] = &["_sources", "_static", "node_modules"];

/// The compiled rules of one run.
#[derive(Debug)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    default_folders: bool,
}

impl Excludes {
    pub fn new(globs: &[String], default_folders: bool) -> Result<Self> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for pattern in globs {
            let glob = compile(pattern)?;
            if pattern.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |set: GlobSetBuilder| {
            set.build().map_err(|err| Error::BadExclude {
                pattern: globs.join(" "),
                reason: err.to_string(),
            })
        };
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
            default_folders,
        })
    }

    /// Whether the entry `name`, at `inside` (its path in the walked folder, with `/`),
    /// is left out; `is_dir` for folders.
    pub fn excludes(&self, name: &str, inside: &str, is_dir: bool) -> bool {
        if name.starts_with('.') {
            return true;
        }
        if is_dir && self.default_folders && DEFAULT_EXCLUDED_FOLDERS.contains(&name) {
            return true;
        }
        self.names.is_match(name) || self.paths.is_match(inside)
    }
}

fn compile(pattern: &str) -> Result<Glob> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|err| Error::BadExclude {
            pattern: pattern.to_string(),
            reason: err.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_dot_entries_and_generated_folders() {
        let rules = Excludes::new(&["*.rst.txt".into(), "drafts/**".into()], true).unwrap();
        assert!(rules.excludes(".git", ".git", true));
        assert!(rules.excludes("_sources", "library/_sources", true));
        assert!(rules.excludes("node_modules", "node_modules", true));
        assert!(rules.excludes("os.rst.txt", "library/os.rst.txt", false));
        assert!(rules.excludes("a.md", "drafts/a.md", false));
        assert!(!rules.excludes("a.md", "guide/a.md", false));
        assert!(
            !rules.excludes("_sources", "_sources", false),
            "a file of that name stays"
        );
        let plain = Excludes::new(&[], false).unwrap();
        assert!(!plain.excludes("_sources", "_sources", true));
        assert!(Excludes::new(&["a[".into()], true).is_err());
    }
}
