//! TypeScript, TSX and JavaScript: definitions, imports, calls and chunks.

use super::*;

const TYPESCRIPT: &str = r#"import { a } from "./a";
import * as fs from 'fs';
export { b } from "./b";

export interface Shape {
  area(): number;
}

export type Id = string | number;

export enum Color { Red, Green }

export abstract class Base {
  abstract area(): number;
}

export class Circle extends Base implements Shape {
  constructor(private r: number) {
    super();
  }
  area(): number {
    return Math.PI * square(this.r);
  }
  onClick = () => {
    this.emit("click");
  };
}

export function square(x: number): number {
  return x * x;
}

export const double = (x: number) => x * 2;
export const LIMIT = 10;
const local = 1;
const handler = function () {
  return new Circle(1);
};
namespace Geometry {
  export function unit() { return 1; }
}
"#;

#[test]
fn typescript_symbols_imports_calls_and_chunks() {
    let file = parsed(Language::TypeScript, TYPESCRIPT);
    assert_eq!(
        symbols(&file),
        vec![
            ("Shape", Interface, 5, 7, None),
            ("Id", Type, 9, 9, None),
            ("Color", Enum, 11, 11, None),
            ("Base", Class, 13, 15, None),
            ("area", Method, 14, 14, Some("Base")),
            ("Circle", Class, 17, 27, None),
            ("constructor", Method, 18, 20, Some("Circle")),
            ("area", Method, 21, 23, Some("Circle")),
            ("onClick", Method, 24, 26, Some("Circle")),
            ("square", Function, 29, 31, None),
            ("double", Function, 33, 33, None),
            ("LIMIT", Constant, 34, 34, None),
            ("handler", Function, 36, 38, None),
            ("Geometry", Module, 39, 41, None),
            ("unit", Function, 40, 40, Some("Geometry")),
        ]
    );
    assert_eq!(imports(&file), vec![("./a", 1), ("fs", 2), ("./b", 3)]);
    assert_eq!(
        calls(&file),
        vec![
            ("square", 22, Some("area")),
            ("emit", 25, Some("onClick")),
            ("Circle", 37, Some("handler")),
        ]
    );
    assert_eq!(
        chunks(&file),
        vec![
            (1, 3, None, None),
            (5, 7, Some("Shape"), Some(Interface)),
            (9, 9, Some("Id"), Some(Type)),
            (11, 11, Some("Color"), Some(Enum)),
            (13, 15, Some("Base"), Some(Class)),
            (17, 27, Some("Circle"), Some(Class)),
            (29, 31, Some("square"), Some(Function)),
            (33, 33, Some("double"), Some(Function)),
            (34, 35, None, None),
            (36, 38, Some("handler"), Some(Function)),
            (39, 41, Some("Geometry"), Some(Module)),
        ]
    );
}

const TSX: &str = r#"import React from "react";

export const Button = ({ label }: Props) => {
  const [on, setOn] = useState(false);
  return <button onClick={() => setOn(!on)}>{label}</button>;
};

export default function App() {
  return <Button label="x" />;
}
"#;

#[test]
fn tsx_components_are_functions() {
    let file = parsed(Language::Tsx, TSX);
    assert_eq!(
        symbols(&file),
        vec![("Button", Function, 3, 6, None), ("App", Function, 8, 10, None),]
    );
    assert_eq!(imports(&file), vec![("react", 1)]);
    assert_eq!(
        calls(&file),
        vec![("useState", 4, Some("Button")), ("setOn", 5, Some("Button"))]
    );
    assert_eq!(
        chunks(&file),
        vec![
            (1, 1, None, None),
            (3, 6, Some("Button"), Some(Function)),
            (8, 10, Some("App"), Some(Function)),
        ]
    );
}

const JAVASCRIPT: &str = r#"const fs = require("fs");
import path from "path";

class Animal {
  #secret = 1;
  speak() {
    return this.#say(fmt("x"));
  }
  #say(s) { return s; }
  handle = () => {};
}

function* gen() { yield 1; }

module.exports.helper = function () {
  return import("./lazy.js");
};
var legacy = function () {};
export const VERSION = "1";
"#;

#[test]
fn javascript_symbols_imports_calls_and_chunks() {
    let file = parsed(Language::JavaScript, JAVASCRIPT);
    assert_eq!(
        symbols(&file),
        vec![
            ("Animal", Class, 4, 11, None),
            ("speak", Method, 6, 8, Some("Animal")),
            ("#say", Method, 9, 9, Some("Animal")),
            ("handle", Method, 10, 10, Some("Animal")),
            ("gen", Function, 13, 13, None),
            ("helper", Function, 15, 17, None),
            ("legacy", Function, 18, 18, None),
            ("VERSION", Constant, 19, 19, None),
        ]
    );
    assert_eq!(imports(&file), vec![("fs", 1), ("path", 2), ("./lazy.js", 16)]);
    assert_eq!(
        calls(&file),
        vec![
            ("require", 1, None),
            ("#say", 7, Some("speak")),
            ("fmt", 7, Some("speak")),
        ]
    );
    assert_eq!(
        chunks(&file),
        vec![
            (1, 2, None, None),
            (4, 11, Some("Animal"), Some(Class)),
            (13, 13, Some("gen"), Some(Function)),
            (15, 17, Some("helper"), Some(Function)),
            (18, 18, Some("legacy"), Some(Function)),
            (19, 19, Some("VERSION"), Some(Constant)),
        ]
    );
}
