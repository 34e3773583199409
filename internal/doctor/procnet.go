package doctor

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// tcpListen is the state column of a listening socket in /proc/net/tcp (TCP_LISTEN).
const tcpListen = "0A"

// ListeningInodes returns the socket inodes of the TCP sockets listening on port, from the text of
// /proc/net/tcp or /proc/net/tcp6. The inode is what ties a socket to the process holding it.
func ListeningInodes(r io.Reader, port int) []string {
	var out []string
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		if len(f) < 10 || f[3] != tcpListen {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || int(p) != port || f[9] == "0" {
			continue
		}
		out = append(out, f[9])
	}
	return out
}
