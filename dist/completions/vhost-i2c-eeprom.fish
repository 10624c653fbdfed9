complete -c vhost-i2c-eeprom -s s -l socket-path -d 'vhost-user socket path. With --socket-count N > 1 the index 0..N-1 is appended (gpio.sock -> gpio.sock0, gpio.sock1, ...); with one socket it is used as given. A live backend\'s socket is never replaced; a stale one is' -r -F
complete -c vhost-i2c-eeprom -s c -l socket-count -d 'Number of sockets, each an independent device, served concurrently' -r
complete -c vhost-i2c-eeprom -l fd -d 'Serve on this already-listening socket instead of binding one (QEMU\'s backend program conventions). Under systemd socket activation (LISTEN_FDS) it is not needed' -r
complete -c vhost-i2c-eeprom -l socket-mode -d 'Permissions of the sockets this program creates, in octal' -r
complete -c vhost-i2c-eeprom -l group -d 'Give the sockets this program creates to this group (a name or a number)' -r
complete -c vhost-i2c-eeprom -s e -l eeprom -d 'An EEPROM on the bus: model=24c32,addr=0x50,file=PATH[,page=N][,wp=ack|nack][,twr-us=N]. Models: 24c01 24c02 24c04 24c08 24c16 24c32 24c64 24c128 24c256 24c512 24c1024 (24cm01) 24c2048 (24cm02). Repeat for more devices' -r
complete -c vhost-i2c-eeprom -l wp-state -d 'WP line state file published by vhost-gpio (--wp-state there). Without it the WP pin is not wired (never asserted). Suffixed like --socket-path when --socket-count > 1, as vhost-gpio does, so bus i follows gpio device i' -r -F
complete -c vhost-i2c-eeprom -l print-capabilities -d 'Print the backend\'s capabilities as JSON and exit (QEMU\'s backend program conventions)'
complete -c vhost-i2c-eeprom -l sync -d 'Make every completed write cycle durable (fdatasync) before the request completes'
complete -c vhost-i2c-eeprom -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vhost-i2c-eeprom -s V -l version -d 'Print version'
