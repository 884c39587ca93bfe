"""The lab: throwaway network-namespace labs with a real SIP server (Kamailio doing digest
authentication), a phone, offices behind NAT, attackers (sipp guessers, a forger, sipvicious'
svwar and svcrack), and recordings of what crossed the wire.

For the tests, `make demo` (fastban.lab.demo) and the benchmarks. Nothing an operator runs
imports it: no module of fastban/ outside this package does. Needs root and the lab's programs
(`make host`). Its modules are imported by their full names (fastban.lab.siplab,
fastban.lab.netns, fastban.lab.guard_process, ...); this package re-exports nothing.

    netns.py           network namespaces and veth links, removed on close (Lab, Namespace)
    siplab.py          SipLab: the topology, its life cycle, the clients it starts; and every
                       public name of the modules below
    plan.py            the addresses, ports and accounts; SipLabError
    server.py          Kamailio: configuration, start and stop, counting from its log
    clients.py         programs in the lab's namespaces, sipp and what its runs did
    office.py          an office behind NAT: its phones and their tallies
    attackers.py       the forger, the extension scanners, svcrack
    recording.py       tcpdump recordings and reading them back
    transports.py      SIP over TLS for sipp (a socat relay), bare TCP/TLS connection attempts,
                       a HEP collector in the server's namespace
    guard_process.py   `fastban run` in a lab namespace (GuardProcess)
    demo.py            `make demo`
    forge.py           run by the forger inside its namespace: forged SIP over a raw socket
The data files: kamailio.cfg.tmpl (the server's script) and the sipp scenarios (*.xml).
"""
