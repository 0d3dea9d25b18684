fn main() {
    println!("job-executor");
}
