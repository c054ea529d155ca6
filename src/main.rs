fn main() {
    print!("{}", etcd_pilot::crdgen::all_yaml().unwrap());
}
