//! The `agentflow` binary: everything lives in the library; see `cli`.
fn main() -> std::process::ExitCode {
    agentflow::cli::main()
}
