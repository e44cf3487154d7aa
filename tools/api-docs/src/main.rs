//! `api-docs`: writes `docs/api/` from the code, or with `--check` fails when it is out of date.
//!
//! ```text
//! cargo run -p choreo-api-docs --bin api-docs            # regenerate docs/api
//! cargo run -p choreo-api-docs --bin api-docs -- --check # exit 1 if docs/api differs
//! ```
//! `--dir <path>` writes or checks another directory.

use anyhow::{Context, bail};
use clap::Parser;
use std::path::PathBuf;

/// Writes docs/api/ (AsyncAPI, JSON Schemas, examples, OpenAPI) from the code, or checks it.
#[derive(Debug, Parser)]
#[command(name = "api-docs", version)]
struct Args {
    /// Fails (exit 1) when the directory differs from what the code says, writing nothing.
    #[arg(long)]
    check: bool,
    /// The directory to write or check [default: the workspace's docs/api].
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let Args { check, dir } = Args::parse();
    let dir = dir.unwrap_or_else(choreo_api_docs::default_dir);
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed_and_parsed() {
        Args::command().debug_assert();

        let args = Args::try_parse_from(["api-docs", "--check", "--dir", "x"]).expect("parsed");

        assert!(args.check);
        assert_eq!(args.dir, Some(PathBuf::from("x")));
        assert!(Args::try_parse_from(["api-docs", "--chekc"]).is_err());
        assert_eq!(
            Args::try_parse_from(["api-docs", "--version"])
                .expect_err("printed by clap")
                .kind(),
            clap::error::ErrorKind::DisplayVersion
        );
    }
}
