//! Writes the Cogo CRDs as YAML into each directory given on the command line
//! (`crdgen crds charts/cogo-operator/crds docs/broker-openapi.json`), or prints them to stdout
//! when none is given; an argument ending in `.json` is the file for the broker's OpenAPI
//! document. With `--check`, writes nothing and exits 1 when a file differs from what it
//! would write.

use std::{path::Path, process::ExitCode};

fn main() -> ExitCode {
    let mut check = false;
    let mut dirs = Vec::new();
    let mut openapi = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!(
                    "usage: crdgen [--check] [DIR ...]\nWrites the Cogo CRDs into each DIR, or prints them when no DIR is given."
                );
                return ExitCode::SUCCESS;
            }
            _ if arg.ends_with(".json") => openapi = Some(arg),
            _ => dirs.push(arg),
        }
    }
    let mut rendered = Vec::new();
    for (file, crd) in cogo_api::crdgen::all() {
        match cogo_api::crdgen::render(&crd) {
            Ok(yaml) => rendered.push((file, yaml)),
            Err(e) => {
                eprintln!("crdgen: cannot render {file}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if dirs.is_empty() && openapi.is_none() {
        for (_, yaml) in &rendered {
            print!("{yaml}");
        }
        return ExitCode::SUCCESS;
    }
    let mut stale = false;
    let mut outputs: Vec<(std::path::PathBuf, String)> = Vec::new();
    for dir in &dirs {
        for (file, yaml) in &rendered {
            outputs.push((Path::new(dir).join(file), yaml.clone()));
        }
    }
    if let Some(file) = &openapi {
        outputs.push((file.into(), cogo_api::openapi::render()));
    }
    for (path, text) in &outputs {
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if current == *text {
            continue;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        if check {
            eprintln!("crdgen: {} is stale; run `make crds`", path.display());
            stale = true;
        } else if let Err(e) = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(path, text)) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("crdgen: wrote {}", path.display());
        }
    }
    if stale {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
