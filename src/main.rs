//! The `declab` binary: parse the command line, call the library, print the error chain once,
//! and exit with 0 (ok), 1 (runtime failure) or 2 (invalid configuration).

use clap::Parser;

fn main() {
    // A closed pipe (`declab validate x.yaml | head`) ends the process quietly, as it does for
    // other Unix tools, instead of panicking in `println!` (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // `DECLAB_SIMD=avx2|portable` lowers candle's quantised kernels to their AVX2 tier too (they
    // read this variable once, at first use), so one AVX-512 host can run what an AVX2 host
    // runs. Set here, before any thread exists.
    if matches!(
        std::env::var("DECLAB_SIMD").as_deref(),
        Ok("avx2") | Ok("portable")
    ) {
        std::env::set_var("MISTRALRS_FORCE_AVX2", "1");
    }
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
