/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * parse.h - Ethernet / IPv4 / L4 parsing for tc programs into a small summary
 * (struct mbr_pkt) that the rest of the datapath works on, so that no later
 * step touches packet memory again.
 *
 * Every read is bounds-checked against data_end right before it, in the form
 * the verifier understands. Headers that lie beyond the linear part of a
 * non-linear skb (rare on veths; possible after GRO) are pulled in with
 * bpf_skb_pull_data, and only then: pulling a cloned skb copies its head, so
 * the common case must not pull.
 *
 * Results: MBR_PARSE_* for what the packet is; for IPv4, 0 or a drop reason
 * (MBR_DROP_INVALID_PACKET for a broken IP header, MBR_DROP_CT_INVALID_HDR for
 * a truncated L4 header).
 */
#ifndef MEMBRANE_LIB_PARSE_H
#define MEMBRANE_LIB_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "common.h"
#include "abi.h"

/* TCP flag bits (byte 13 of the TCP header). */
#define MBR_TCP_FIN 0x01
#define MBR_TCP_SYN 0x02
#define MBR_TCP_RST 0x04
#define MBR_TCP_PSH 0x08
#define MBR_TCP_ACK 0x10

/* IPv4 frag_off bits (host order). */
#define MBR_IP_MF         0x2000
#define MBR_IP_OFFSET_MSK 0x1fff

/* ICMP types (RFC 792). linux/icmp.h drags in libc headers, so not used. */
#define MBR_ICMP_ECHOREPLY      0
#define MBR_ICMP_DEST_UNREACH   3
#define MBR_ICMP_SOURCE_QUENCH  4
#define MBR_ICMP_ECHO           8
#define MBR_ICMP_TIME_EXCEEDED  11
#define MBR_ICMP_PARAMETERPROB  12

/* The first 8 bytes of every ICMP message. */
struct mbr_icmphdr {
	__u8   type;
	__u8   code;
	__sum16 checksum;
	__be16 id;                /* echo; "unused" in errors */
	__be16 sequence;
};

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

/* What the L2 payload is. */
enum mbr_l3 {
	MBR_L3_IPV4  = 0,
	MBR_L3_ARP   = 1,
	MBR_L3_OTHER = 2, /* IPv6 and every other EtherType */
};

/* mbr_pkt.frag */
#define MBR_FRAG_NONE     0 /* not fragmented */
#define MBR_FRAG_FIRST    1 /* offset 0, more fragments follow: has the L4 header */
#define MBR_FRAG_NONFIRST 2 /* offset > 0: no L4 header, ports unknown */

/* mbr_pkt.icmp_kind */
#define MBR_ICMP_KIND_NONE  0 /* not ICMP */
#define MBR_ICMP_KIND_ECHO  1 /* echo request / reply: tracked by echo id */
#define MBR_ICMP_KIND_ERROR 2 /* dest-unreach, time-exceeded, param-problem, source-quench */
#define MBR_ICMP_KIND_OTHER 3 /* anything else: not tracked, policy decides per packet */

/*
 * The parsed packet. The tuple (saddr, daddr, sport, dport, proto) is the
 * conntrack tuple of this packet: real ports for TCP/UDP/SCTP, for ICMP echo
 * (id, 0) on a request and (0, id) on a reply, zeros otherwise.
 */
struct mbr_pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__be16 policy_port;       /* what a policy entry matches: dport, or htons(ICMP type) */
	__be16 ip_id;             /* for fragment tracking */
	__u8  proto;
	__u8  tcp_flags;
	__u8  icmp_type;
	__u8  icmp_code;
	__u8  icmp_kind;          /* MBR_ICMP_KIND_* */
	__u8  frag;               /* MBR_FRAG_* */
	__u8  inner_proto;        /* ICMP error: the quoted packet's tuple */
	__u8  pad;
	__be32 inner_saddr;
	__be32 inner_daddr;
	__be16 inner_sport;
	__be16 inner_dport;
};

/*
 * Makes the first `need` bytes of the packet directly readable. 0 when they
 * are (the common case costs one compare), -1 when the packet is shorter.
 * Packet pointers derived before a call are invalid after it.
 */
static __always_inline int pkt_ensure(struct __sk_buff *skb, __u32 need)
{
	if ((long)skb->data + need <= (long)skb->data_end)
		return 0;
	if (skb->len < need)
		return -1;
	if (bpf_skb_pull_data(skb, need) < 0)
		return -1;
	if ((long)skb->data + need > (long)skb->data_end)
		return -1;
	return 0;
}

/* The EtherType of the frame (MBR_L3_*); a runt frame counts as OTHER. */
static __always_inline int parse_l2(struct __sk_buff *skb)
{
	void *data, *data_end;
	struct ethhdr *eth;

	if (pkt_ensure(skb, sizeof(struct ethhdr)))
		return MBR_L3_OTHER;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return MBR_L3_OTHER;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return MBR_L3_IPV4;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return MBR_L3_ARP;
	return MBR_L3_OTHER;
}

static __always_inline int icmp_is_error(__u8 type)
{
	return type == MBR_ICMP_DEST_UNREACH || type == MBR_ICMP_TIME_EXCEEDED ||
	       type == MBR_ICMP_PARAMETERPROB || type == MBR_ICMP_SOURCE_QUENCH;
}

/*
 * The tuple of the packet an ICMP error quotes, at offset `off` (its IP
 * header): addresses and protocol, plus ports (TCP/UDP/SCTP) or the echo id
 * arranged as for a live echo packet. 0 or MBR_DROP_CT_INVALID_HDR.
 */
static __always_inline int parse_icmp_inner(struct __sk_buff *skb, __u32 off, struct mbr_pkt *pkt)
{
	void *data, *data_end;
	struct iphdr *ip;
	__u32 ihl;
	__u8 *l4;

	if (pkt_ensure(skb, off + sizeof(struct iphdr)))
		return MBR_DROP_CT_INVALID_HDR;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + off;
	if ((void *)(ip + 1) > data_end)
		return MBR_DROP_CT_INVALID_HDR;
	if (ip->version != 4 || ip->ihl < 5)
		return MBR_DROP_CT_INVALID_HDR;
	ihl = ip->ihl * 4;
	pkt->inner_saddr = ip->saddr;
	pkt->inner_daddr = ip->daddr;
	pkt->inner_proto = ip->protocol;
	pkt->inner_sport = 0;
	pkt->inner_dport = 0;

	switch (ip->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
	case IPPROTO_ICMP:
		break;
	default:
		return 0;
	}
	/* RFC 792: the quoted datagram's header plus its first 8 bytes. */
	if (pkt_ensure(skb, off + ihl + 8))
		return MBR_DROP_CT_INVALID_HDR;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	l4 = data + off + ihl;
	if ((void *)(l4 + 8) > data_end)
		return MBR_DROP_CT_INVALID_HDR;
	if (pkt->inner_proto == IPPROTO_ICMP) {
		struct mbr_icmphdr *icmp = (struct mbr_icmphdr *)l4;

		if (icmp->type == MBR_ICMP_ECHO)
			pkt->inner_sport = icmp->id;
		else if (icmp->type == MBR_ICMP_ECHOREPLY)
			pkt->inner_dport = icmp->id;
		return 0;
	}
	/* TCP, UDP and SCTP all start with source and destination port. */
	pkt->inner_sport = *(__be16 *)l4;
	pkt->inner_dport = *(__be16 *)(l4 + 2);
	return 0;
}

/*
 * Parses the IPv4 packet after the Ethernet header into *pkt. Returns 0, or
 * the drop reason of a malformed or truncated packet. A non-first fragment
 * comes back with MBR_FRAG_NONFIRST and zero ports: the caller recovers them
 * from the first fragment's state.
 */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct mbr_pkt *pkt)
{
	const __u32 l3 = sizeof(struct ethhdr);
	void *data, *data_end;
	struct iphdr *ip;
	__u32 ihl, tot_len, l4;
	__u16 frag_off;

	if (pkt_ensure(skb, l3 + sizeof(struct iphdr)))
		return MBR_DROP_INVALID_PACKET;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip = data + l3;
	if ((void *)(ip + 1) > data_end)
		return MBR_DROP_INVALID_PACKET;
	if (ip->version != 4 || ip->ihl < 5)
		return MBR_DROP_INVALID_PACKET;
	ihl = ip->ihl * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	/* The header must fit in the datagram, and the datagram in the frame
	 * (a frame may be longer: Ethernet padding). */
	if (tot_len < ihl || l3 + tot_len > skb->len)
		return MBR_DROP_INVALID_PACKET;

	pkt->saddr = ip->saddr;
	pkt->daddr = ip->daddr;
	pkt->proto = ip->protocol;
	pkt->ip_id = ip->id;
	pkt->sport = 0;
	pkt->dport = 0;
	pkt->policy_port = 0;
	pkt->tcp_flags = 0;
	pkt->icmp_type = 0;
	pkt->icmp_code = 0;
	pkt->icmp_kind = MBR_ICMP_KIND_NONE;
	pkt->inner_proto = 0;
	pkt->pad = 0;

	frag_off = bpf_ntohs(ip->frag_off);
	if (frag_off & MBR_IP_OFFSET_MSK) {
		pkt->frag = MBR_FRAG_NONFIRST;
		return 0;
	}
	pkt->frag = (frag_off & MBR_IP_MF) ? MBR_FRAG_FIRST : MBR_FRAG_NONE;

	l4 = l3 + ihl;
	switch (pkt->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp;

		if (tot_len < ihl + sizeof(struct tcphdr) ||
		    pkt_ensure(skb, l4 + sizeof(struct tcphdr)))
			return MBR_DROP_CT_INVALID_HDR;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		tcp = data + l4;
		if ((void *)(tcp + 1) > data_end)
			return MBR_DROP_CT_INVALID_HDR;
		if (tcp->doff < 5)
			return MBR_DROP_CT_INVALID_HDR;
		pkt->sport = tcp->source;
		pkt->dport = tcp->dest;
		pkt->policy_port = tcp->dest;
		pkt->tcp_flags = ((__u8 *)tcp)[13];
		return 0;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		struct udphdr *udp;

		/* SCTP's common header starts with the ports too. */
		if (tot_len < ihl + sizeof(struct udphdr) ||
		    pkt_ensure(skb, l4 + sizeof(struct udphdr)))
			return MBR_DROP_CT_INVALID_HDR;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		udp = data + l4;
		if ((void *)(udp + 1) > data_end)
			return MBR_DROP_CT_INVALID_HDR;
		pkt->sport = udp->source;
		pkt->dport = udp->dest;
		pkt->policy_port = udp->dest;
		return 0;
	}
	case IPPROTO_ICMP: {
		struct mbr_icmphdr *icmp;

		if (tot_len < ihl + sizeof(struct mbr_icmphdr) ||
		    pkt_ensure(skb, l4 + sizeof(struct mbr_icmphdr)))
			return MBR_DROP_CT_INVALID_HDR;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		icmp = data + l4;
		if ((void *)(icmp + 1) > data_end)
			return MBR_DROP_CT_INVALID_HDR;
		pkt->icmp_type = icmp->type;
		pkt->icmp_code = icmp->code;
		pkt->policy_port = bpf_htons(icmp->type);
		if (icmp->type == MBR_ICMP_ECHO) {
			pkt->icmp_kind = MBR_ICMP_KIND_ECHO;
			pkt->sport = icmp->id;
		} else if (icmp->type == MBR_ICMP_ECHOREPLY) {
			pkt->icmp_kind = MBR_ICMP_KIND_ECHO;
			pkt->dport = icmp->id;
		} else if (icmp_is_error(icmp->type) && pkt->frag == MBR_FRAG_NONE) {
			pkt->icmp_kind = MBR_ICMP_KIND_ERROR;
			return parse_icmp_inner(skb, l4 + sizeof(struct mbr_icmphdr), pkt);
		} else {
			pkt->icmp_kind = MBR_ICMP_KIND_OTHER;
		}
		return 0;
	}
	default:
		/* Tracked by addresses and protocol alone. */
		return 0;
	}
}

/* The conntrack tuple of a packet parse_tracked_shape accepted. */
struct mbr_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8  proto;              /* IPPROTO_TCP or IPPROTO_UDP */
	__u8  tcp_flags;          /* 0 for UDP */
};

/*
 * The commonest packet read with one bounds check and no copy of the
 * headers: IPv4 without options, not a fragment, carrying TCP or UDP whose
 * header lies in the linear data. For such a packet parse_ipv4 would return
 * 0 with MBR_FRAG_NONE and the same tuple; every check parse_ipv4 makes on
 * it is made here too. 0 and *t filled, or -1 for any other packet (other
 * protocols, IP options, fragments, headers to pull, anything malformed):
 * parse_l2 and parse_ipv4 decide those.
 */
static __always_inline int parse_tracked_shape(struct __sk_buff *skb, struct mbr_tuple *t)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u8 *l4 = (void *)(ip + 1);
	__u32 tot_len;

	/* 8 bytes of L4 header: all of UDP's, the ports and more of TCP. */
	if ((void *)(l4 + sizeof(struct udphdr)) > data_end)
		return -1;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || *(__u8 *)ip != 0x45 ||
	    (ip->frag_off & bpf_htons(MBR_IP_MF | MBR_IP_OFFSET_MSK)))
		return -1;
	tot_len = bpf_ntohs(ip->tot_len);
	if (sizeof(struct ethhdr) + tot_len > skb->len)
		return -1;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)l4;

		if ((void *)(tcp + 1) > data_end || tot_len < sizeof(*ip) + sizeof(*tcp) ||
		    tcp->doff < 5)
			return -1;
		t->tcp_flags = l4[13];
	} else if (ip->protocol == IPPROTO_UDP) {
		if (tot_len < sizeof(*ip) + sizeof(struct udphdr))
			return -1;
		t->tcp_flags = 0;
	} else {
		return -1;
	}
	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->sport = *(__be16 *)l4;
	t->dport = *(__be16 *)(l4 + 2);
	t->proto = ip->protocol;
	return 0;
}

#endif /* MEMBRANE_LIB_PARSE_H */
