// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The electrical pull of a simulated line.

use std::fmt;
use std::str::FromStr;

/// Pull of a line: the level it reads when nothing drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pull {
    /// Pulled up: an undriven line reads 1.
    Up,
    /// Pulled down: an undriven line reads 0.
    Down,
    /// No pull: an undriven line reads 0 in this model.
    None,
}

impl Pull {
    /// The level an undriven line with this pull reads.
    pub fn level(self) -> bool {
        matches!(self, Pull::Up)
    }

    /// The byte stored for this pull in the WP state file.
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Pull::Down => 0,
            Pull::Up => 1,
            Pull::None => 2,
        }
    }

    /// The pull stored as `byte` in the WP state file.
    pub(crate) fn from_byte(byte: u8) -> Option<Pull> {
        match byte {
            0 => Some(Pull::Down),
            1 => Some(Pull::Up),
            2 => Some(Pull::None),
            _ => None,
        }
    }
}

/// A pull name other than `up`, `down` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pull '{0}': expected up, down or none")]
pub struct ParsePullError(pub String);

impl FromStr for Pull {
    type Err = ParsePullError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "up" => Ok(Pull::Up),
            "down" => Ok(Pull::Down),
            "none" => Ok(Pull::None),
            other => Err(ParsePullError(other.to_string())),
        }
    }
}

impl fmt::Display for Pull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pull::Up => "up",
            Pull::Down => "down",
            Pull::None => "none",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for p in [Pull::Up, Pull::Down, Pull::None] {
            assert_eq!(p.to_string().parse::<Pull>(), Ok(p));
            assert_eq!(Pull::from_byte(p.to_byte()), Some(p));
        }
        assert_eq!("UP".parse::<Pull>(), Err(ParsePullError("UP".into())));
        assert_eq!(Pull::from_byte(3), None);
    }

    #[test]
    fn only_up_reads_high() {
        assert!(Pull::Up.level());
        assert!(!Pull::Down.level());
        assert!(!Pull::None.level());
    }
}
