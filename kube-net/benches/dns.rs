//! DNS benchmark (being written).

fn main() {
    println!("dns bench: not written yet");
}
