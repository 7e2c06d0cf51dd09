//! The `clockpath` binary: parse arguments, run the command, map the outcome to an exit code
//! (0 success, 1 runtime failure, 2 bad configuration or usage).
use std::process::ExitCode;

fn main() -> ExitCode {
    match clockpath::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clockpath: {:#}", e.error);
            ExitCode::from(e.code)
        }
    }
}
