//! Embeds the bundled corpus (`docs/` at the repository root) in the binary, so that
//! `cauce up` can ingest it wherever it runs.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    println!("cargo:rerun-if-changed={}", docs.display());
    let mut entries: Vec<_> = std::fs::read_dir(&docs)
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.retain(|p| p.extension().is_some_and(|e| e == "md"));
    entries.sort();
    let mut code = String::from(
        "/// The bundled corpus: (file name, contents).\npub const BUNDLED_DOCS: &[(&str, &str)] = &[\n",
    );
    for path in entries {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let absolute = path.canonicalize().unwrap();
        writeln!(
            code,
            "    ({name:?}, include_str!({:?})),",
            absolute.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("bundled_docs.rs");
    std::fs::write(out, code).unwrap();
}
