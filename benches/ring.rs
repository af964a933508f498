//! (placeholder: see the module's issue)
fn main() {}
