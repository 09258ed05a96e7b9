/**
 * The CustomResourceDefinitions Membrane serves, defined once here and written to
 * deploy/crds/*.yaml by gen-crds.ts (the YAML files are what clusters apply; a unit
 * test checks that they match this source).
 *
 * cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy accept the
 * policies Cilium users already write. Rules are typed down to ports, protocols
 * and HTTP/DNS rules, so an object that is plainly malformed (spec as a string,
 * ingress not a list, a port that is an object, an unknown protocol) is refused by
 * the apiserver with a message naming the field. Where the grammar is deep and
 * still growing upstream (Kafka rules, groups, TLS contexts, listeners) the schema
 * keeps unknown fields, and the agent's policy parser is the judge.
 *
 * membrane.io/v1alpha1 MembraneIdentity records one security identity: its number
 * is the object name, its security-relevant labels are the object.
 */

export type JsonSchema = { [key: string]: unknown };

const str = (description?: string): JsonSchema => ({ type: 'string', ...(description ? { description } : {}) });
const strList = (description: string): JsonSchema => ({ type: 'array', description, items: { type: 'string' } });
const list = (description: string, items: JsonSchema): JsonSchema => ({ type: 'array', description, items });
const open = (description: string): JsonSchema => ({ type: 'object', description, 'x-kubernetes-preserve-unknown-fields': true });

const labelSelector = (description: string): JsonSchema => ({
  type: 'object',
  description,
  properties: {
    matchLabels: {
      type: 'object',
      description: 'Labels that must all be present with these values. Keys may carry a source prefix such as k8s: or any:.',
      additionalProperties: { type: 'string' },
    },
    matchExpressions: list('Set-based requirements; all must hold.', {
      type: 'object',
      required: ['key', 'operator'],
      properties: {
        key: str(),
        operator: { type: 'string', enum: ['In', 'NotIn', 'Exists', 'DoesNotExist'] },
        values: strList('Values for In and NotIn.'),
      },
    }),
  },
});

const entities = (direction: 'from' | 'to'): JsonSchema => ({
  type: 'array',
  description: `Well-known peers ${direction === 'from' ? 'allowed to send' : 'that may be reached'}: world, cluster, host, remote-node, kube-apiserver, ...`,
  items: {
    type: 'string',
    enum: ['all', 'world', 'world-ipv4', 'world-ipv6', 'cluster', 'host', 'remote-node', 'kube-apiserver', 'ingress', 'init', 'health', 'unmanaged', 'none'],
  },
});

const cidrList = (description: string): JsonSchema => ({
  type: 'array',
  description,
  items: { type: 'string', description: 'An IPv4 or IPv6 prefix, e.g. 10.0.0.0/8, or an address.' },
});

const cidrSet = (description: string): JsonSchema =>
  list(description, {
    type: 'object',
    properties: {
      cidr: str('The prefix to allow.'),
      except: strList('Prefixes inside cidr that stay excluded.'),
      cidrGroupRef: str('Name of a CiliumCIDRGroup.'),
      cidrGroupSelector: labelSelector('Selects CiliumCIDRGroups by label.'),
    },
  });

const portProtocol: JsonSchema = {
  type: 'string',
  enum: ['TCP', 'UDP', 'SCTP', 'ICMP', 'ICMPV6', 'VRRP', 'IGMP', 'ANY'],
  description: 'Protocol of the ports; empty or ANY means any protocol.',
};

const portProtocols: JsonSchema = list('Ports with their protocol.', {
  type: 'object',
  required: ['port'],
  properties: {
    port: {
      description: 'A port number (written "80" or 80) or a named container port.',
      'x-kubernetes-int-or-string': true,
      // minimum/maximum judge a number, pattern judges a string.
      minimum: 0,
      maximum: 65535,
      pattern: '^([0-9]{1,5}|[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)$',
    },
    endPort: { type: 'integer', minimum: 0, maximum: 65535, description: 'Last port of a range that starts at port.' },
    protocol: portProtocol,
  },
});

const httpRule: JsonSchema = {
  type: 'object',
  description: 'An HTTP request that is allowed; every field given must match (path, method and host are extended POSIX regular expressions).',
  properties: {
    path: str('Request path, e.g. /api/v1/.*.'),
    method: str('Request method, e.g. GET or GET|HEAD.'),
    host: str('Host header, e.g. api\\.example\\.com.'),
    headers: strList('Headers that must be present, "Name" or "Name: value".'),
    headerMatches: list('Headers to match, with what to do on a mismatch.', {
      type: 'object',
      required: ['name'],
      properties: {
        name: str('Header name.'),
        value: str('Value the header must have.'),
        mismatch: { type: 'string', enum: ['LOG', 'ADD', 'DELETE', 'REPLACE'], description: 'What to do when the value differs; empty drops the request.' },
        secret: { type: 'object', required: ['name'], properties: { name: str(), namespace: str() } },
      },
    }),
  },
};

const dnsRule: JsonSchema = {
  type: 'object',
  description: 'DNS names whose lookups are allowed.',
  properties: { matchName: str('An exact name.'), matchPattern: str('A wildcard pattern, e.g. *.example.com.') },
};

const l7Rules: JsonSchema = {
  type: 'object',
  description: 'L7 rules for the ports of this entry (one kind per entry).',
  properties: {
    http: list('HTTP requests that are allowed.', httpRule),
    dns: list('DNS lookups that are allowed.', dnsRule),
    kafka: list('Kafka requests that are allowed.', open('A Kafka rule: role or apiKey, apiVersion, clientID, topic.')),
    l7proto: str('Name of an L7 parser for l7.'),
    l7: list('Generic key-value rules for l7proto.', { type: 'object', additionalProperties: { type: 'string' } }),
  },
};

const portRules = (deny: boolean): JsonSchema =>
  list(
    deny ? 'Ports the rule denies; L7 rules do not apply to deny.' : 'Ports the rule allows, optionally with L7 rules.',
    deny
      ? { type: 'object', properties: { ports: portProtocols } }
      : {
          type: 'object',
          properties: {
            ports: portProtocols,
            rules: l7Rules,
            terminatingTLS: open('TLS context for connections terminated by the proxy.'),
            originatingTLS: open('TLS context for connections originated by the proxy.'),
            serverNames: strList('TLS SNI values to allow.'),
            listener: open('A proxy listener to redirect to.'),
          },
        },
  );

const icmps: JsonSchema = list('ICMP types to allow or deny.', {
  type: 'object',
  properties: {
    fields: list('ICMP family and type.', {
      type: 'object',
      required: ['type'],
      properties: {
        family: { type: 'string', enum: ['IPv4', 'IPv6'] },
        type: { 'x-kubernetes-int-or-string': true, description: 'An ICMP type number or name, e.g. 8 or EchoRequest.' },
      },
    }),
  },
});

const authentication: JsonSchema = {
  type: 'object',
  description: 'Mutual authentication required on the selected traffic.',
  properties: { mode: { type: 'string', enum: ['disabled', 'required', 'test-always-fail'] } },
};

const toServices: JsonSchema = list('Kubernetes services whose backends may be reached.', {
  type: 'object',
  properties: {
    k8sService: { type: 'object', properties: { serviceName: str(), namespace: str() } },
    k8sServiceSelector: {
      type: 'object',
      required: ['selector'],
      properties: { selector: labelSelector('Selects services by label.'), namespace: str() },
    },
  },
});

const toFQDNs: JsonSchema = list('DNS names that may be reached; needs a DNS rule that lets the lookups through the proxy.', {
  type: 'object',
  properties: {
    matchName: { type: 'string', description: 'An exact name, e.g. api.example.com.' },
    matchPattern: { type: 'string', description: 'A wildcard pattern, e.g. *.example.com.' },
  },
});

const groups = (description: string): JsonSchema => list(description, open('A group provider, e.g. aws.'));

function ingressRule(deny: boolean): JsonSchema {
  const properties: Record<string, JsonSchema> = {
    fromEndpoints: list('Endpoints allowed to send, by label.', labelSelector('An endpoint selector.')),
    fromRequires: list('Extra requirements every source must also meet.', labelSelector('An endpoint selector.')),
    fromCIDR: cidrList('Source prefixes outside the cluster.'),
    fromCIDRSet: cidrSet('Source prefixes with exceptions.'),
    fromEntities: entities('from'),
    fromGroups: groups('Sources given by a group provider.'),
    fromNodes: list('Nodes allowed to send, by label.', labelSelector('A node selector.')),
    toPorts: portRules(deny),
    icmps,
  };
  if (!deny) properties['authentication'] = authentication;
  return { type: 'object', properties };
}

function egressRule(deny: boolean): JsonSchema {
  const properties: Record<string, JsonSchema> = {
    toEndpoints: list('Endpoints that may be reached, by label.', labelSelector('An endpoint selector.')),
    toRequires: list('Extra requirements every destination must also meet.', labelSelector('An endpoint selector.')),
    toCIDR: cidrList('Destination prefixes outside the cluster.'),
    toCIDRSet: cidrSet('Destination prefixes with exceptions.'),
    toEntities: entities('to'),
    toServices,
    toGroups: groups('Destinations given by a group provider.'),
    toNodes: list('Nodes that may be reached, by label.', labelSelector('A node selector.')),
    toPorts: portRules(deny),
    icmps,
  };
  if (!deny) {
    properties['toFQDNs'] = toFQDNs;
    properties['authentication'] = authentication;
  }
  return { type: 'object', properties };
}

/** One policy rule: the subject (endpoints or nodes) and its allow and deny lists. */
export function ruleSchema(description: string): JsonSchema {
  return {
    type: 'object',
    description,
    properties: {
      endpointSelector: labelSelector('The endpoints this rule applies to.'),
      nodeSelector: labelSelector('The nodes this rule applies to (host policy).'),
      ingress: list('Traffic allowed into the selected endpoints.', ingressRule(false)),
      ingressDeny: list('Traffic denied into the selected endpoints; deny wins over allow.', ingressRule(true)),
      egress: list('Traffic allowed out of the selected endpoints.', egressRule(false)),
      egressDeny: list('Traffic denied out of the selected endpoints; deny wins over allow.', egressRule(true)),
      labels: list('Labels that identify this rule, e.g. for policy trace.', {
        type: 'object',
        required: ['key'],
        properties: { key: str(), value: str(), source: str() },
      }),
      enableDefaultDeny: {
        type: 'object',
        description: 'Whether selecting an endpoint turns on default deny for that direction (default true for each).',
        properties: { ingress: { type: 'boolean' }, egress: { type: 'boolean' } },
      },
      description: str('Free text for people.'),
      log: { type: 'object', properties: { value: str('A value added to the flow logs of this rule.') } },
    },
    'x-kubernetes-validations': [
      {
        rule: 'has(self.endpointSelector) != has(self.nodeSelector)',
        message: 'a rule selects its subject with exactly one of endpointSelector or nodeSelector',
      },
    ],
  };
}

const policyStatus: JsonSchema = open('What the agents report about this policy: conditions, derivative policies.');

function policyCrd(kind: string, plural: string, scope: 'Namespaced' | 'Cluster', shortNames: string[]): JsonSchema {
  const what = scope === 'Namespaced' ? 'in its namespace' : 'across the whole cluster';
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.cilium.io`, labels: { 'app.kubernetes.io/part-of': 'membrane' } },
    spec: {
      group: 'cilium.io',
      names: { kind, listKind: `${kind}List`, plural, singular: kind.toLowerCase(), shortNames, categories: ['cilium', 'ciliumpolicy'] },
      scope,
      versions: [
        {
          name: 'v2',
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [{ name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' }],
          schema: {
            openAPIV3Schema: {
              type: 'object',
              description: `A Cilium network policy that applies ${what}; enforced by Membrane.`,
              required: ['metadata'],
              properties: {
                apiVersion: { type: 'string' },
                kind: { type: 'string' },
                metadata: { type: 'object' },
                spec: ruleSchema('A single policy rule.'),
                specs: list('Several policy rules, each applied as if it were its own policy.', ruleSchema('A policy rule.')),
                status: policyStatus,
              },
              'x-kubernetes-validations': [{ rule: 'has(self.spec) || has(self.specs)', message: `a ${kind} needs spec or specs` }],
            },
          },
        },
      ],
    },
  };
}

function identityCrd(): JsonSchema {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: 'membraneidentities.membrane.io', labels: { 'app.kubernetes.io/part-of': 'membrane' } },
    spec: {
      group: 'membrane.io',
      names: {
        kind: 'MembraneIdentity',
        listKind: 'MembraneIdentityList',
        plural: 'membraneidentities',
        singular: 'membraneidentity',
        shortNames: ['mid'],
        categories: ['membrane'],
      },
      scope: 'Cluster',
      versions: [
        {
          name: 'v1alpha1',
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [{ name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' }],
          schema: {
            openAPIV3Schema: {
              type: 'object',
              description:
                'A cluster-wide security identity. The object name is the numeric identity; spec.securityLabels are the labels it stands for. An identity never changes its labels: a new label set gets a new number.',
              required: ['spec'],
              properties: {
                apiVersion: { type: 'string' },
                kind: { type: 'string' },
                metadata: { type: 'object' },
                spec: {
                  type: 'object',
                  required: ['securityLabels'],
                  properties: {
                    securityLabels: {
                      type: 'object',
                      description: 'Source-prefixed labels, e.g. "k8s:app": frontend, "k8s:io.kubernetes.pod.namespace": default.',
                      additionalProperties: { type: 'string' },
                      'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: 'the labels of an identity cannot change' }],
                    },
                  },
                },
                status: {
                  type: 'object',
                  description: 'Where the identity is in use.',
                  properties: {
                    lastUsed: { type: 'string', format: 'date-time', description: 'When an agent last saw an endpoint with this identity.' },
                    nodes: strList('Nodes that have endpoints with this identity.'),
                  },
                },
              },
              'x-kubernetes-validations': [
                {
                  rule: "self.metadata.name.matches('^[1-9][0-9]{0,9}$')",
                  message: 'the name of a MembraneIdentity is its number, e.g. 12345',
                },
              ],
            },
          },
        },
      ],
    },
  };
}

export interface CrdFile {
  /** File name under deploy/crds/. */
  file: string;
  object: JsonSchema;
}

export function membraneCrds(): CrdFile[] {
  return [
    { file: 'cilium.io_ciliumnetworkpolicies.yaml', object: policyCrd('CiliumNetworkPolicy', 'ciliumnetworkpolicies', 'Namespaced', ['cnp', 'ciliumnp']) },
    {
      file: 'cilium.io_ciliumclusterwidenetworkpolicies.yaml',
      object: policyCrd('CiliumClusterwideNetworkPolicy', 'ciliumclusterwidenetworkpolicies', 'Cluster', ['ccnp']),
    },
    { file: 'membrane.io_membraneidentities.yaml', object: identityCrd() },
  ];
}
