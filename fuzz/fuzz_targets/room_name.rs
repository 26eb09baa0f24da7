//! Room-name validation (`hub::validate_room_name_with`), under both
//! character policies and any length bound: an accepted name is non-empty,
//! within the bound, free of control characters, and `safe` implies
//! `printable`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::hub::{RoomChars, RoomNamePolicy, validate_room_name_with};

const SAFE_PUNCTUATION: &str = "_-:.@/=+#~";

fuzz_target!(|data: &[u8]| {
    let Some((&bound, rest)) = data.split_first() else {
        return;
    };
    let Ok(name) = std::str::from_utf8(rest) else {
        return;
    };
    let max_chars = usize::from(bound).max(1);
    let check = |chars| {
        validate_room_name_with(
            name,
            &RoomNamePolicy {
                max_chars,
                chars,
                reserved_prefix: None,
            },
        )
    };
    let printable = check(RoomChars::Printable);
    let safe = check(RoomChars::Safe);
    if printable.is_ok() {
        assert!(!name.is_empty());
        assert!(name.chars().count() <= max_chars);
        assert!(!name.chars().any(char::is_control));
    }
    if safe.is_ok() {
        assert!(printable.is_ok(), "safe names are printable");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || SAFE_PUNCTUATION.contains(c))
        );
    }
    if let Err(error) = printable.as_ref().and(safe.as_ref()) {
        assert!(!error.code().is_empty());
    }
});
