//! The `ingestd` binary: everything lives in the library (`cli::main`).

fn main() -> std::process::ExitCode {
    ingestd::cli::main()
}
