# %pre of the ha-agent .rpm: create the system user and group (the same ones as
# /usr/lib/sysusers.d/ha-agent.conf) before the files are laid down, so that
# /etc/ha-agent.toml can be installed with group ha-agent.
getent group ha-agent >/dev/null || groupadd -r ha-agent
getent passwd ha-agent >/dev/null ||
    useradd -r -g ha-agent -d /var/lib/ha-agent -M -s /sbin/nologin \
        -c "ha-agent failover daemon" ha-agent
exit 0
