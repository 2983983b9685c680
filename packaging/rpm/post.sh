# %post of the ha-agent .rpm: reload systemd, create /etc/ha-agent/ for the secret file, and say
# what to do next. The service is left disabled: it cannot start before the site configuration
# exists. ($1 is 1 on a first install, 2 or more on an upgrade.)
if [ ! -e /etc/ha-agent ]; then
    install -d -m 0750 -o root -g ha-agent /etc/ha-agent
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ ! -e /etc/systemd/system/multi-user.target.wants/ha-agent.service ]; then
    echo "ha-agent is installed but not enabled: it needs the site configuration first."
    echo "  edit /etc/ha-agent.toml, create the secret file, then systemctl enable --now ha-agent"
    echo "  (check the file with: ha-agent check-config; see ha-agent(8))"
fi
exit 0
