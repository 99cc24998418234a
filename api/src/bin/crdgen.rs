//! Writes the Cogo CRDs as YAML into each directory given on the command line
//! (`crdgen crds charts/cogo-operator/crds`), or prints them to stdout when none is given.
//! With `--check`, writes nothing and exits 1 when a file differs from what it would write.

use std::{path::Path, process::ExitCode};

fn main() -> ExitCode {
    let mut check = false;
    let mut dirs = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!(
                    "usage: crdgen [--check] [DIR ...]\nWrites the Cogo CRDs into each DIR, or prints them when no DIR is given."
                );
                return ExitCode::SUCCESS;
            }
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
    if dirs.is_empty() {
        for (_, yaml) in &rendered {
            print!("{yaml}");
        }
        return ExitCode::SUCCESS;
    }
    let mut stale = false;
    for dir in &dirs {
        for (file, yaml) in &rendered {
            let path = Path::new(dir).join(file);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == *yaml {
                continue;
            }
            if check {
                eprintln!("crdgen: {} is stale; run `make crds`", path.display());
                stale = true;
            } else if let Err(e) = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, yaml)) {
                eprintln!("crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            } else {
                println!("crdgen: wrote {}", path.display());
            }
        }
    }
    if stale {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
