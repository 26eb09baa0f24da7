//! Room membership: a sharded map from room name to a copy-on-write member
//! list, so fan-out can iterate a snapshot without holding any lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::interest::RoomInterest;
use super::{ClientId, Member};
use crate::telemetry;

/// Longest room name accepted, in characters.
pub const MAX_ROOM_NAME_CHARS: usize = 200;

const SHARDS: usize = 32;

type Shard = HashMap<Arc<str>, Arc<Vec<Member>>>;

#[derive(Debug)]
pub(super) struct Rooms {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Told of a room's first member and of its last leaving, under the
    /// shard's lock so that it hears them in order.
    pub(super) interest: OnceLock<Arc<dyn RoomInterest>>,
}

/// A room and how many members it has on this node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomInfo {
    pub name: String,
    pub members: usize,
}

/// Which characters a room name may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoomChars {
    /// Anything but control characters (the default).
    #[default]
    Printable,
    /// ASCII letters, digits and `_-:.@/=+#~`, nothing else.
    Safe,
}

/// The room-name rules in force (`--max-room-name-chars`, `--room-name-chars`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomNamePolicy {
    pub max_chars: usize,
    pub chars: RoomChars,
    /// Names beginning with this belong to the broker (Redis: `roomcast:`,
    /// the room log's channels and keys), not to clients.
    pub reserved_prefix: Option<&'static str>,
}

impl Default for RoomNamePolicy {
    fn default() -> Self {
        RoomNamePolicy {
            max_chars: MAX_ROOM_NAME_CHARS,
            chars: RoomChars::Printable,
            reserved_prefix: None,
        }
    }
}

/// Why a room name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("room name is empty")]
    Empty,
    #[error("room name is longer than {0} characters")]
    TooLong(usize),
    #[error("room name contains a control character")]
    ControlCharacter,
    #[error("room name may contain only ASCII letters, digits and _-:.@/=+#~")]
    Character,
    #[error("room names beginning with {0:?} are reserved for the server's own use")]
    Reserved(&'static str),
}

impl RoomError {
    /// Stable code for error replies.
    pub fn code(self) -> &'static str {
        match self {
            RoomError::Empty => "room_empty",
            RoomError::TooLong(_) => "room_too_long",
            RoomError::ControlCharacter | RoomError::Character => "room_invalid",
            RoomError::Reserved(_) => "room_reserved",
        }
    }
}

/// Checks a room name a client asked for, with the default policy.
pub fn validate_room_name(name: &str) -> Result<(), RoomError> {
    validate_room_name_with(name, &RoomNamePolicy::default())
}

/// Checks a room name against `policy`. Looks at no more than
/// `max_chars + 1` characters, so a 10 MB name costs no more than a short one.
pub fn validate_room_name_with(name: &str, policy: &RoomNamePolicy) -> Result<(), RoomError> {
    if name.is_empty() {
        return Err(RoomError::Empty);
    }
    // A char is at most 4 bytes: longer names cannot fit, whatever they hold.
    if name.len() > policy.max_chars.saturating_mul(4)
        || name.chars().nth(policy.max_chars).is_some()
    {
        return Err(RoomError::TooLong(policy.max_chars));
    }
    if name.chars().any(char::is_control) {
        return Err(RoomError::ControlCharacter);
    }
    if let Some(prefix) = policy.reserved_prefix
        && name.starts_with(prefix)
    {
        return Err(RoomError::Reserved(prefix));
    }
    if policy.chars == RoomChars::Safe
        && !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:.@/=+#~".contains(c))
    {
        return Err(RoomError::Character);
    }
    Ok(())
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            interest: OnceLock::new(),
        }
    }
}

impl Rooms {
    /// Adds a member; returns the members that were there before, or `None`
    /// if this client already was one.
    pub(super) fn insert(&self, room: &str, member: Member) -> Option<Arc<Vec<Member>>> {
        let mut shard = self.shard(room);
        let members = shard.entry(Arc::from(room)).or_insert_with(|| {
            telemetry::rooms_changed(1.0);
            if let Some(interest) = self.interest.get() {
                interest.first_member(room);
            }
            Arc::default()
        });
        if members.iter().any(|m| m.client == member.client) {
            return None;
        }
        let before = members.clone();
        Arc::make_mut(members).push(member);
        Some(before)
    }

    pub(super) fn remove(&self, room: &str, client: ClientId) -> bool {
        let mut shard = self.shard(room);
        let Some(members) = shard.get_mut(room) else {
            return false;
        };
        let Some(index) = members.iter().position(|m| m.client == client) else {
            return false;
        };
        Arc::make_mut(members).swap_remove(index);
        if members.is_empty() {
            shard.remove(room);
            telemetry::rooms_changed(-1.0);
            if let Some(interest) = self.interest.get() {
                interest.last_member_left(room);
            }
        }
        true
    }

    /// A snapshot of the room's members, cheap to take (one refcount).
    pub(super) fn members(&self, room: &str) -> Option<Arc<Vec<Member>>> {
        self.shard(room).get(room).cloned()
    }

    pub(super) fn contains(&self, room: &str) -> bool {
        self.shard(room).contains_key(room)
    }

    pub(super) fn list(&self) -> Vec<RoomInfo> {
        let mut rooms: Vec<RoomInfo> = self
            .shards
            .iter()
            .flat_map(|shard| {
                lock(shard)
                    .iter()
                    .map(|(name, members)| RoomInfo {
                        name: name.to_string(),
                        members: members.len(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    fn shard(&self, room: &str) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(room) as usize % SHARDS;
        lock(&self.shards[index])
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every update is a single insert/remove; a poisoned shard is consistent.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_checked() {
        assert_eq!(validate_room_name("device01"), Ok(()));
        assert_eq!(validate_room_name("ünïcødé:1"), Ok(()));
        assert_eq!(validate_room_name(""), Err(RoomError::Empty));
        assert_eq!(
            validate_room_name(&"x".repeat(201)),
            Err(RoomError::TooLong(200))
        );
        assert_eq!(validate_room_name(&"é".repeat(200)), Ok(()));
        assert_eq!(validate_room_name("a\nb"), Err(RoomError::ControlCharacter));
        let safe = RoomNamePolicy {
            max_chars: 8,
            chars: RoomChars::Safe,
            reserved_prefix: Some("rc:"),
        };
        assert_eq!(
            validate_room_name_with("rc:log:a", &safe),
            Err(RoomError::Reserved("rc:"))
        );
        assert_eq!(validate_room_name_with("rc", &safe), Ok(()));
        assert_eq!(validate_room_name_with("dev:1-a", &safe), Ok(()));
        assert_eq!(
            validate_room_name_with("a b", &safe),
            Err(RoomError::Character)
        );
        assert_eq!(
            validate_room_name_with("ü", &safe),
            Err(RoomError::Character)
        );
        assert_eq!(
            validate_room_name_with(&"x".repeat(9), &safe),
            Err(RoomError::TooLong(8))
        );
    }
}
