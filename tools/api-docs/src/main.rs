//! `api-docs`: writes `docs/api/` from the code, or with `--check` fails when it is out of date.
//!
//! ```text
//! cargo run -p choreo-api-docs --bin api-docs            # regenerate docs/api
//! cargo run -p choreo-api-docs --bin api-docs -- --check # exit 1 if docs/api differs
//! ```
//! `--dir <path>` writes or checks another directory.

use anyhow::{Context, bail};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut check = false;
    let mut dir = choreo_api_docs::default_dir();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--dir" => dir = PathBuf::from(args.next().context("--dir needs a path")?),
            other => bail!("unknown argument {other:?}; usage: api-docs [--check] [--dir <path>]"),
        }
    }
    if check {
        let problems =
            choreo_api_docs::check(&dir).with_context(|| format!("reading {}", dir.display()))?;
        if !problems.is_empty() {
            for problem in &problems {
                eprintln!("{}", problem.describe());
            }
            bail!(
                "{} is out of date with the code: run `make api-docs` and commit the result",
                dir.display()
            );
        }
        println!("{} is up to date", dir.display());
    } else {
        let changed =
            choreo_api_docs::write(&dir).with_context(|| format!("writing {}", dir.display()))?;
        for change in &changed {
            println!("{change}");
        }
        println!(
            "{}: {} file(s) written or removed",
            dir.display(),
            changed.len()
        );
    }
    Ok(())
}
