// The namespace wiring lives with the lab (the demo uses it too).
export * from '../../../ts/lab/netns.js';
