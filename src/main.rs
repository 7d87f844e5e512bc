//! The `declab` binary: parse the command line, call the library, print the error chain once,
//! and exit with 0 (ok), 1 (runtime failure) or 2 (invalid configuration).

use clap::Parser;

fn main() {
    let cli = declab::cli::Cli::parse();
    let code = match declab::commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("declab: error: {e:#}");
            declab::error::exit_code(&e)
        }
    };
    std::process::exit(code);
}
