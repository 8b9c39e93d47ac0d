export { runDriverContractSuite, type DriverSetup } from './suite.js';
