//! Writes the Cogo CRDs as YAML into each directory given on the command line
//! (`crdgen crds charts/cogo-operator/crds docs/broker-openapi.json docs/gateway-openapi.json`),
//! or prints them to stdout when none is given; an argument ending in `gateway-openapi.json` is
//! the file for the chat gateway's OpenAPI document, any other ending in `.json` the broker's. With `--check`, writes nothing and exits 1 when a file differs from what it
//! would write.

use std::{path::Path, process::ExitCode};

fn main() -> ExitCode {
    let mut check = false;
    let mut dirs = Vec::new();
    let mut openapi = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!(
                    "usage: crdgen [--check] [DIR ...]\nWrites the Cogo CRDs into each DIR, or prints them when no DIR is given."
                );
                return ExitCode::SUCCESS;
            }
            _ if arg.ends_with(".json") => openapi.push(arg),
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
    if dirs.is_empty() && openapi.is_empty() {
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
    for file in &openapi {
        // The gateway's document by its name; any other is the broker's.
        let text = if file.ends_with("gateway-openapi.json") {
            cogo_api::openapi::render_gateway()
        } else {
            cogo_api::openapi::render()
        };
        outputs.push((file.into(), text));
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
