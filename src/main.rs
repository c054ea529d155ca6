//! The `etcd-pilot` command: everything is in [`etcd_pilot::cli`].

fn main() -> std::process::ExitCode {
    etcd_pilot::cli::main()
}
