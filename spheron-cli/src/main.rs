//! The `spheron` command line.

fn main() {}
