//! A perfectly good component of another world: the host must refuse it at
//! load with a message naming what it exports instead.
#![allow(unsafe_code, reason = "wit-bindgen's generated exports")]

wit_bindgen::generate!({
    inline: "
        package acme:chat@1.0.0;
        interface handler {
            handle: func(body: list<u8>) -> string;
        }
        world bot {
            export handler;
        }
    ",
    world: "bot",
});

struct Bot;

impl exports::acme::chat::handler::Guest for Bot {
    fn handle(body: Vec<u8>) -> String {
        format!("{} bytes", body.len())
    }
}

export!(Bot);
