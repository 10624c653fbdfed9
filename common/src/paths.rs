// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The naming rule both backends use for their per-device paths.

use std::path::{Path, PathBuf};

/// The path of device `index` out of `count`: `path` itself when there is one device, else
/// `path` with the index appended (`gpio.sock` -> `gpio.sock0`, `gpio.sock1`, ...).
///
/// Both backends name sockets, control sockets, WP state files and EEPROM images this way, so
/// the i2c bus `i` of one process follows the WP line of gpio device `i` of the other.
/// (rust-vmm's vhost-device appends the index even for a single socket.)
pub fn indexed_path(path: &Path, index: usize, count: usize) -> PathBuf {
    if count == 1 {
        path.to_path_buf()
    } else {
        let mut s = path.as_os_str().to_os_string();
        s.push(index.to_string());
        PathBuf::from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_keeps_the_path_several_get_the_index() {
        let p = Path::new("/run/gpio.sock");
        assert_eq!(indexed_path(p, 0, 1), p);
        assert_eq!(indexed_path(p, 0, 3), Path::new("/run/gpio.sock0"));
        assert_eq!(indexed_path(p, 2, 3), Path::new("/run/gpio.sock2"));
    }
}
