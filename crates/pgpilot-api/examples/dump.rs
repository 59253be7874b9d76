fn main() {
    for (f, crd) in pgpilot_api::crds::all() {
        println!("# {f}\n{}", serde_yaml::to_string(&crd).unwrap());
    }
}
