// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The man pages and shell completions under dist/ are those the command line generates.
//! Regenerate with `VGN_UPDATE_DOCS=1 cargo test -p vhost-i2c-eeprom --test docs`.

use std::path::Path;

use clap::CommandFactory;

#[test]
fn man_pages_and_completions_are_current() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    let stale = test_kit::docs::check_or_update(vhost_i2c_eeprom::config::Cli::command(), &dist);
    assert!(
        stale.is_empty(),
        "stale generated files under dist/: {stale:?}; regenerate with \
         VGN_UPDATE_DOCS=1 cargo test -p vhost-i2c-eeprom --test docs"
    );
}
