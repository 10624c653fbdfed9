# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_vhost_gpio_global_optspecs
    string join \n s/socket-path= c/socket-count= fd= socket-mode= group= print-capabilities l/lines= control-socket= wp-line= wp-state= h/help V/version
end

function __fish_vhost_gpio_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_vhost_gpio_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_vhost_gpio_using_subcommand
    set -l cmd (__fish_vhost_gpio_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -s s -l socket-path -d 'vhost-user socket path. With --socket-count N > 1 the index 0..N-1 is appended (gpio.sock -> gpio.sock0, gpio.sock1, ...); with one socket it is used as given. A live backend\'s socket is never replaced; a stale one is' -r -F
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -s c -l socket-count -d 'Number of sockets, each an independent device, served concurrently' -r
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -l fd -d 'Serve on this already-listening socket instead of binding one (QEMU\'s backend program conventions). Under systemd socket activation (LISTEN_FDS) it is not needed' -r
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -l socket-mode -d 'Permissions of the sockets this program creates, in octal' -r
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -l group -d 'Give the sockets this program creates to this group (a name or a number)' -r
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -s l -l lines -d 'The lines: a count N (named gpio0..gpio<N-1>, pulled down) or a comma list of name[:up|:down|:none]. Default pull: down; the --wp-line defaults to up. A line pulled none reads 0 when undriven' -r
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -l control-socket -d 'Control socket path (line protocol; see `vhost-gpio ctl --help`). Suffixed like --socket-path when --socket-count > 1. Created like the vhost-user sockets (--socket-mode, --group)' -r -F
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -l wp-line -d 'Line (name or index) whose effective level is published to --wp-state' -r
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -l wp-state -d 'WP state file shared with vhost-i2c-eeprom. Suffixed like --socket-path when --socket-count > 1' -r -F
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -l print-capabilities -d 'Print the backend\'s capabilities as JSON and exit (QEMU\'s backend program conventions)'
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -s V -l version -d 'Print version'
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -f -a "ctl" -d 'Send one command to a running vhost-gpio\'s control socket and print the answer. Commands: list | get LINE | set LINE 0|1 | clear LINE | watch | help'
complete -c vhost-gpio -n "__fish_vhost_gpio_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c vhost-gpio -n "__fish_vhost_gpio_using_subcommand ctl" -l control-socket -d 'The control socket of the running vhost-gpio' -r -F
complete -c vhost-gpio -n "__fish_vhost_gpio_using_subcommand ctl" -l max-events -d 'With `watch`: exit after this many events' -r
complete -c vhost-gpio -n "__fish_vhost_gpio_using_subcommand ctl" -s h -l help -d 'Print help'
complete -c vhost-gpio -n "__fish_vhost_gpio_using_subcommand help; and not __fish_seen_subcommand_from ctl help" -f -a "ctl" -d 'Send one command to a running vhost-gpio\'s control socket and print the answer. Commands: list | get LINE | set LINE 0|1 | clear LINE | watch | help'
complete -c vhost-gpio -n "__fish_vhost_gpio_using_subcommand help; and not __fish_seen_subcommand_from ctl help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
