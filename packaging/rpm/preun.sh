# %preun of the ha-agent .rpm: on erase ($1 = 0) stop and disable the service; on upgrade
# ($1 >= 1) leave it running, %postun restarts it with the new binary.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now ha-agent.service >/dev/null 2>&1 || :
fi
exit 0
