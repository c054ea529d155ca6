//! The in-pod probe of the smoke tests: everything is in [`etcd_pilot_e2e::probe`].

fn main() -> std::process::ExitCode {
    etcd_pilot_e2e::probe::main()
}
