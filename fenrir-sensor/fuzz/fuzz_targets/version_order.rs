//! Two Debian versions of any text: parsing never panics, and their order is a total order
//! (reflexive, antisymmetric) as dpkg's is.
#![no_main]

use std::cmp::Ordering;

use fenrir_sensor::parse::version::Version;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (left, right) = text.split_once('\u{0}').unwrap_or((&text, ""));
    let (Ok(a), Ok(b)) = (Version::parse(left), Version::parse(right)) else {
        return;
    };
    assert_eq!(a.cmp(&a), Ordering::Equal);
    assert_eq!(a.cmp(&b), b.cmp(&a).reverse(), "{left:?} vs {right:?}");
});
