# %postun of the ha-agent .rpm: reload systemd; on upgrade ($1 >= 1) restart the service if it
# was running, so that the new binary takes over.
#
# rpm has no purge: erasing the package keeps /var/lib/ha-agent (the Raft state), /etc/ha-agent/
# (the secret file) and an edited /etc/ha-agent.toml (saved as /etc/ha-agent.toml.rpmsave).
# Delete them by hand to start from scratch. The ha-agent user and group stay as well.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart ha-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
