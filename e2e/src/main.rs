//! The `testbed` command: everything is in [`etcd_pilot_e2e::cli`].

fn main() -> std::process::ExitCode {
    etcd_pilot_e2e::cli::main()
}
